"""The built-in benchmark data: "digit scenes" with imperfect-label regimes.

Real handwritten digits (scikit-learn's bundled 8x8 ``load_digits``) are placed, several per
image, on cluttered RGB canvases; from one generated set the label regimes ``multilabel``,
``partial`` (probability ``p`` of a label being known), ``single`` (the main digit's class)
and ``noisy`` (symmetric or pair-flip noise at rate ``r``, plus a verified subset) are written
in the formats of mmpretrain, timm and plain numpy. See ``docs/data.md``.

Importing this package is cheap: scikit-learn is imported when scenes are first generated,
and mmengine / mmpretrain / timm never are.
"""

from labelwise.data.make import (
    GENERATOR_VERSION,
    MANIFEST,
    RegimeSplit,
    load_manifest,
    load_regime,
    load_scenes,
    make_dataset,
)
from labelwise.data.regimes import (
    NOISE_KINDS,
    REGIME_KINDS,
    Regime,
    RegimeLabels,
    corrupt_labels,
    expand_regimes,
    make_regime_labels,
    mask_labels,
    presence_matrix,
    sample_verified,
)
from labelwise.data.scenes import (
    CLASS_NAMES,
    NUM_CLASSES,
    SPLITS,
    Scene,
    SceneConfig,
    generate_scenes,
    iter_scenes,
    source_split,
)

__all__ = [
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "MANIFEST",
    "NOISE_KINDS",
    "NUM_CLASSES",
    "REGIME_KINDS",
    "SPLITS",
    "Regime",
    "RegimeLabels",
    "RegimeSplit",
    "Scene",
    "SceneConfig",
    "corrupt_labels",
    "expand_regimes",
    "generate_scenes",
    "iter_scenes",
    "load_manifest",
    "load_regime",
    "load_scenes",
    "make_dataset",
    "make_regime_labels",
    "mask_labels",
    "presence_matrix",
    "sample_verified",
    "source_split",
]
