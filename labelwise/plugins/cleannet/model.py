"""The CleanNet network: a reference-set encoder, a query autoencoder and their cosine relevance.

Lee et al., "CleanNet: Transfer Learning for Scalable Image Classifier Training with Label
Noise", CVPR 2018 (reference code: kuanghuei/clean-net, ``model.py``). Every layer is fully
connected with ``tanh``; weights are Xavier-uniform and biases zero, as the reference code's
``tf.contrib.layers.fully_connected`` defaults.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from labelwise.errors import ConfigError

#: Input normalisations: ``'log'`` is ``v = log(1 + x)`` (the paper's, for features >= 0 such
#: as pooled post-ReLU activations), ``'l2'`` scales each vector to unit length, ``'none'``
#: passes features through.
NORMS = ("log", "l2", "none")


def normalize_features(x: torch.Tensor, norm: str) -> torch.Tensor:
    """Apply CleanNet's input normalisation to features ``x (..., D)``.

    ``'log'`` assumes ``x > -1`` (pooled ReLU features are ``>= 0``); the public entry points
    (:func:`labelwise.plugins.cleannet.fit.fit_cleannet`, the scoring functions) check it.
    """
    if norm == "log":
        return torch.log1p(x)
    if norm == "l2":
        return F.normalize(x, dim=-1)
    if norm == "none":
        return x
    raise ConfigError(f"CleanNet norm must be one of {', '.join(NORMS)}, got {norm!r}")


class ReferenceSetEncoder(nn.Module):
    """Encode each class's reference set ``(C, K, D)`` into a class embedding ``phi_s (C, E)``.

    Each reference ``v_i`` goes through ``fc(hidden) -> dropout -> fc(embed) = h_i ->
    fc(embed) = u_i``; attention ``a_i = softmax_i(u_i . c)`` over the ``K`` references with a
    learned context vector ``c``; ``phi_s = fc(out)(sum_i a_i h_i)``.
    """

    def __init__(self, feature_dim: int, *, hidden: int = 512, embed: int = 256, out: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(feature_dim, hidden)
        self.dropout = float(dropout)
        self.fc_h = nn.Linear(hidden, embed)
        self.fc_u = nn.Linear(embed, embed)
        self.context = nn.Parameter(torch.zeros(embed))
        self.fc_out = nn.Linear(embed, out)

    def attention(self, v: torch.Tensor, *, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(a, h)``: attention weights ``(C, K)`` (each row sums to 1) and ``h (C, K, E)``.

        ``generator`` draws the dropout mask in training mode (``None``: torch's global one).
        """
        h0 = torch.tanh(self.fc1(v))
        if self.training and self.dropout > 0:
            if generator is None:
                h0 = F.dropout(h0, self.dropout, training=True)
            else:
                keep = torch.rand(h0.shape, generator=generator, device=generator.device) >= self.dropout
                h0 = h0 * keep.to(h0.device, h0.dtype) / (1.0 - self.dropout)
        h = torch.tanh(self.fc_h(h0))
        u = torch.tanh(self.fc_u(h))
        a = torch.softmax(u @ self.context, dim=-1)
        return a, h

    def forward(self, v: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        a, h = self.attention(v, generator=generator)
        return torch.tanh(self.fc_out((a.unsqueeze(-1) * h).sum(dim=-2)))


class QueryEncoder(nn.Module):
    """Autoencoder ``D -> hidden -> out (= phi_q) -> hidden -> D`` (``tanh`` on every layer,
    the reconstruction included, as in the reference code)."""

    def __init__(self, feature_dim: int, *, hidden: int = 256, out: int = 128):
        super().__init__()
        self.enc1 = nn.Linear(feature_dim, hidden)
        self.enc2 = nn.Linear(hidden, out)
        self.dec1 = nn.Linear(out, hidden)
        self.dec2 = nn.Linear(hidden, feature_dim)

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(phi_q (B, out), v_hat (B, D))``."""
        phi_q = torch.tanh(self.enc2(torch.tanh(self.enc1(v))))
        v_hat = torch.tanh(self.dec2(torch.tanh(self.dec1(phi_q))))
        return phi_q, v_hat


class CleanNet(nn.Module):
    """CleanNet: relevance ``s = cos(phi_q, phi_s(label))`` of a sample to its (noisy) class.

    Args:
        feature_dim: ``D``, the length of the input features.
        norm: input normalisation, one of :data:`NORMS` (default ``'log'``: ``log(1 + x)``).
        dropout: dropout after the reference encoder's first layer (default 0.0, the reference
            code's default).
        generator: seeds the initialisation (Xavier-uniform weights and context vector, zero
            biases); ``None`` uses torch's global generator.

    The layer sizes are the paper's (reference encoder ``D -> 512 -> 256 -> 256``, class
    embedding 128; query autoencoder ``D -> 256 -> 128 -> 256 -> D``).
    """

    def __init__(self, feature_dim: int, *, norm: str = "log", dropout: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"CleanNet norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"CleanNet dropout must be in [0, 1), got {dropout!r}")
        if int(feature_dim) < 1:
            raise ConfigError(f"CleanNet feature_dim must be a positive integer, got {feature_dim!r}")
        self.feature_dim = int(feature_dim)
        self.norm = norm
        self.reference_encoder = ReferenceSetEncoder(self.feature_dim, dropout=float(dropout))
        self.query_encoder = QueryEncoder(self.feature_dim)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                nn.init.zeros_(module.bias)
        # TF's Glorot initialiser treats a 1-D shape [n] as fan_in = fan_out = n.
        n = self.reference_encoder.context.numel()
        bound = math.sqrt(6.0 / (2 * n))
        with torch.no_grad():
            self.reference_encoder.context.uniform_(-bound, bound, generator=generator)

    def fc_weights(self) -> list[torch.Tensor]:
        """The weight matrices of every fully connected layer (what the L2 penalty covers)."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Linear)]

    def encode_classes(self, references: torch.Tensor, *, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Class embeddings ``phi_s (C, 128)`` of reference sets ``(C, K, D)`` (raw features)."""
        return self.reference_encoder(normalize_features(references, self.norm), generator=generator)

    def encode_queries(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(v, phi_q, v_hat)`` for raw query features ``(B, D)``: the normalised input,
        the query embedding ``(B, 128)`` and its reconstruction ``(B, D)``."""
        v = normalize_features(queries, self.norm)
        phi_q, v_hat = self.query_encoder(v)
        return v, phi_q, v_hat

    def forward(self, queries: torch.Tensor, labels: torch.Tensor, references: torch.Tensor, *,
                generator: torch.Generator | None = None) -> dict:
        """Relevance of each query to its class.

        Each class present in ``labels`` has its reference set encoded **once** per call,
        however many queries carry it.

        Args:
            queries: raw features ``(B, D)``.
            labels: class ids ``(B,)`` (int64), the noisy labels.
            references: reference sets ``(C, K, D)`` of every class (raw features).
            generator: draws the dropout mask in training mode (``None``: torch's global one).

        Returns:
            dict with ``score (B,)`` = ``cos(phi_q, phi_s[label])``, ``v (B, D)`` (normalised
            input), ``v_hat (B, D)`` (reconstruction), ``phi_q (B, 128)``.
        """
        classes, position = torch.unique(labels, return_inverse=True)
        phi_s = self.encode_classes(references[classes], generator=generator)
        v, phi_q, v_hat = self.encode_queries(queries)
        score = relevance(phi_q, phi_s[position])
        return {"score": score, "v": v, "v_hat": v_hat, "phi_q": phi_q}


def relevance(phi_q: torch.Tensor, phi_s: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of matching rows ``(B, E) x (B, E) -> (B,)``."""
    return F.cosine_similarity(phi_q, phi_s, dim=-1, eps=1e-12)
