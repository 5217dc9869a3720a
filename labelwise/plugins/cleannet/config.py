"""CleanNet's options and their defaults (the reference code's), free of torch so the CLI can
build its parser cheaply."""
from __future__ import annotations

import dataclasses
import math

from labelwise.errors import ConfigError

NEG_WEIGHT = 5.0
MARGIN = 0.1
PSEUDO_THRESHOLD = 0.1
BETA = 0.1  # reconstruction
GAMMA = 0.1  # unverified term
WEIGHT_DECAY = 1e-4
#: Default noise-detection threshold (score >= threshold means "label correct").
DEFAULT_THRESHOLD = 0.1


@dataclasses.dataclass(frozen=True)
class CleanNetConfig:
    """Every option of :func:`fit_cleannet`; the defaults are the reference code's.

    Attributes:
        steps: SGD steps (60000).
        lr: initial learning rate (0.01).
        lr_step: multiply the learning rate by ``lr_decay`` every ``lr_step`` steps (30000).
        lr_decay: (0.1).
        momentum: SGD momentum (0.9).
        batch_verified: verified queries per batch (32).
        batch_unverified: class-balanced unverified queries per batch (32; 0 disables the
            unverified term).
        weight_decay: L2 on fully connected weights, as ``wd * sum(W^2) / 2`` (1e-4).
        neg_weight: weight of wrongly labelled verified samples (5.0).
        margin: margin of the negative term (0.1).
        pseudo_threshold: pseudo-label threshold of unverified queries (0.1).
        beta: reconstruction weight (0.1).
        gamma: unverified-term weight (0.1).
        dropout: dropout in the reference encoder (0.0).
        norm: input normalisation, ``'log'`` (``log(1 + x)``), ``'l2'`` or ``'none'`` (``'log'``).
        val_interval: validate (and save the resumable state) every this many steps (2000).
        val_threshold: threshold of the validation accuracy used to pick the best weights (0.1).
        seed: seeds initialisation and batch sampling (0).
    """

    steps: int = 60000
    lr: float = 0.01
    lr_step: int = 30000
    lr_decay: float = 0.1
    momentum: float = 0.9
    batch_verified: int = 32
    batch_unverified: int = 32
    weight_decay: float = WEIGHT_DECAY
    neg_weight: float = NEG_WEIGHT
    margin: float = MARGIN
    pseudo_threshold: float = PSEUDO_THRESHOLD
    beta: float = BETA
    gamma: float = GAMMA
    dropout: float = 0.0
    norm: str = "log"
    val_interval: int = 2000
    val_threshold: float = DEFAULT_THRESHOLD
    seed: int = 0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("float", float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                                  or not math.isfinite(value)):
                raise ConfigError(f"CleanNet option {field.name} must be a finite number, got {value!r}")
        for name in ("steps", "lr_step", "batch_verified", "val_interval"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"CleanNet option {name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.batch_unverified) < 0:
            raise ConfigError(f"CleanNet option batch_unverified must be >= 0, got {self.batch_unverified!r}")
        for name in ("lr", "weight_decay", "neg_weight", "beta", "gamma"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"CleanNet option {name} must be >= 0, got {getattr(self, name)!r}")
