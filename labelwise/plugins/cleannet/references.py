"""Per-class reference sets: k-means centres of each class's (noisily labelled) features."""
from __future__ import annotations

import warnings

import numpy as np

from labelwise.errors import ConfigError, DataError


def build_reference_sets(features, labels, *, num_classes: int, k: int = 32, seed: int = 0,
                         n_init: int = 10, max_iter: int = 50, tol: float = 1e-4,
                         progress: bool = False) -> np.ndarray:
    """k-means on each class's features; the ``k`` centres are that class's reference set.

    scikit-learn's :class:`~sklearn.cluster.KMeans` with k-means++ seeding, ``n_init``
    restarts, ``max_iter`` iterations and tolerance ``tol``, the settings of the reference code
    (which used OpenCV's ``kmeans``; scikit-learn's ``tol`` is relative to the data's variance
    where OpenCV's is an absolute centre shift). Class ``c`` is clustered with the seed
    ``(seed, c)``, so a class's centres do not depend on the other classes.

    A class with fewer than ``k`` samples uses all its samples as centres, repeated in order
    up to ``k`` (with a warning): a repeated reference gets proportionally more attention mass,
    which is what its duplicates would get.

    Args:
        features: ``(N, D)`` raw features (before CleanNet's ``log(1 + x)``).
        labels: ``(N,)`` noisy class ids in ``0 .. num_classes - 1``.
        num_classes: ``C``.
        k: references per class (default 32).
        seed: base seed of k-means.
        n_init, max_iter, tol: k-means settings (defaults 10, 50, 1e-4).
        progress: show a progress bar over classes.

    Returns:
        ``(C, k, D)`` float32 reference sets.

    Raises:
        DataError: shapes disagree, a label is out of range, or a class has no sample.
        ConfigError: ``k < 1``.
    """
    from sklearn.cluster import KMeans
    from tqdm.auto import tqdm

    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    if int(k) < 1:
        raise ConfigError(f"k (references per class) must be >= 1, got {k!r}")
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise DataError(f"expected features (N, D) and labels (N,), got {features.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels must be class ids in 0..{num_classes - 1}, got values {labels.min()}..{labels.max()}")
    out = np.zeros((num_classes, int(k), features.shape[1]), dtype=np.float32)
    for c in tqdm(range(num_classes), desc="k-means references", disable=not progress, leave=False):
        x = features[labels == c]
        if len(x) == 0:
            raise DataError(f"class {c} has no sample: it needs at least one to build its reference set")
        if len(x) <= k:
            if len(x) < k:
                warnings.warn(f"class {c} has {len(x)} samples, fewer than k={k}: its samples are its "
                              "references (repeated to fill k)", stacklevel=2)
            out[c] = x[np.arange(k) % len(x)]
            continue
        state = int(np.random.SeedSequence([int(seed), c]).generate_state(1)[0])
        km = KMeans(n_clusters=int(k), init="k-means++", n_init=n_init, max_iter=max_iter, tol=tol,
                    random_state=state)
        out[c] = km.fit(x).cluster_centers_
    return out
