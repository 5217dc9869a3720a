"""Options of a CFT run, validated once at the public edge."""
from __future__ import annotations

import dataclasses
import math

from labelwise.errors import ConfigError

#: Optimisers: the genetic algorithm, the gradient variant, or both with a per-category choice.
OPTIMIZERS = ("ga", "bp", "best")
#: Validation / fitness metrics.
METRICS = ("ap", "auroc")
#: Probability calibration after CFT (labelwise.plugins.cft.calibration), or none.
CALIBRATIONS = ("platt", "temperature", "isotonic", "none")
#: Objectives of the per-class decision thresholds.
THRESHOLD_OBJECTIVES = ("f1", "accuracy")
#: Fields that change results (the rest only change speed, memory or output).
RESULT_FIELDS = ("optimizer", "metric", "epochs", "early_stopping", "population", "crossover_rate",
                 "mutation_prob", "mutation_range", "elitism", "lr", "gamma_neg", "gamma_pos", "clip", "seed")


@dataclasses.dataclass(frozen=True)
class CFTOptions:
    """Everything that configures CFT. Defaults are the reference schedule of the paper's code.

    Attributes:
        optimizer: ``'ga'`` (genetic algorithm), ``'bp'`` (Adam on the asymmetric loss) or
            ``'best'`` (run both; per category keep whichever of original / GA / BP scores
            highest on validation). Default ``'ga'``.
        metric: ``'ap'`` (average precision) or ``'auroc'``: the GA's fitness on the training
            rows and the selection score on validation. Default ``'ap'``.
        epochs: most generations (GA) or steps (BP) per category. Default 5000.
        early_stopping: stop a category when ``epoch - best_at >= early_stopping`` (``best_at``
            is the last epoch with a strict validation improvement, -1 before any). ``None``
            runs all ``epochs``. Default 300.
        population: GA individuals per category. Default 50.
        crossover_rate: probability that a child's gene comes from its first parent. Default 0.2.
        mutation_prob: probability that a child is mutated. Default 0.5.
        mutation_range: mutation noise is uniform in +- this, on every gene. Default 0.001.
        elitism: fittest individuals copied unchanged into the next generation. Default 1.
        lr: BP's Adam learning rate. Default 1e-4.
        gamma_neg, gamma_pos, clip: BP's asymmetric loss. Defaults 4, 0, 0.05.
        seed: base seed; category ``c`` uses its own generator seeded from ``(seed, c)``.
            Default 0.
        chunk_rows: feature rows per matrix product when a category's known rows are not
            cached (bounds memory for large N). Default 65536.
        cache_bytes: a running category copies its known rows' features (train and
            validation) into contiguous tensors, freed when it ends (faster products), when
            the copies of the ``threads`` categories running at once fit in this many bytes;
            otherwise its rows are gathered in chunks every generation. Default 1 GiB.
        threads: worker threads, each running whole categories (on CPU with single-threaded
            tensor operations: torch's intra-op threads are set to 1 during the run and
            restored after). Results do not depend on it. ``None``: ``torch.get_num_threads()``
            on CPU, 1 on other devices. Default ``None``.
        calibration: after the rows are fitted, map each class's logit to a calibrated
            probability, fitted on the known validation labels: ``'platt'`` (default),
            ``'temperature'``, ``'isotonic'`` or ``'none'`` (the plain sigmoid). Ranking, hence
            AP, is unchanged (the maps are increasing).
        threshold_objective: per-class decision thresholds on the calibrated validation
            probabilities maximise ``'f1'`` (default) or ``'accuracy'``.
        calibration_bins: equal-width bins of the reported calibration errors. Default 15.
    """

    optimizer: str = "ga"
    metric: str = "ap"
    epochs: int = 5000
    early_stopping: int | None = 300
    population: int = 50
    crossover_rate: float = 0.2
    mutation_prob: float = 0.5
    mutation_range: float = 0.001
    elitism: int = 1
    lr: float = 1e-4
    gamma_neg: float = 4.0
    gamma_pos: float = 0.0
    clip: float = 0.05
    seed: int = 0
    chunk_rows: int = 65536
    cache_bytes: int = 1 << 30
    threads: int | None = None
    calibration: str = "platt"
    threshold_objective: str = "f1"
    calibration_bins: int = 15

    def __post_init__(self):
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("metric", self.metric, METRICS)
        _integer("epochs", self.epochs, minimum=1)
        if self.early_stopping is not None:
            _integer("early_stopping", self.early_stopping, minimum=1)
        _integer("population", self.population, minimum=1)
        _integer("elitism", self.elitism, minimum=0)
        if self.elitism > self.population:
            raise ConfigError(f"elitism ({self.elitism}) must not exceed population ({self.population})")
        for name in ("crossover_rate", "mutation_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
        for name in ("mutation_range", "lr", "gamma_neg", "gamma_pos", "clip"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or value < 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        _integer("seed", self.seed, minimum=0)
        _integer("chunk_rows", self.chunk_rows, minimum=1)
        _integer("cache_bytes", self.cache_bytes, minimum=0)
        if self.threads is not None:
            _integer("threads", self.threads, minimum=1)
        _choice("calibration", self.calibration, CALIBRATIONS)
        _choice("threshold_objective", self.threshold_objective, THRESHOLD_OBJECTIVES)
        _integer("calibration_bins", self.calibration_bins, minimum=1)

    @property
    def optimizers(self) -> tuple[str, ...]:
        """The optimisers to run: ``('ga',)``, ``('bp',)`` or ``('ga', 'bp')``."""
        return ("ga", "bp") if self.optimizer == "best" else (self.optimizer,)

    def result_dict(self) -> dict:
        """The options that change results (used to fingerprint resumable state)."""
        return {name: getattr(self, name) for name in RESULT_FIELDS}


def _choice(name, value, valid):
    if value not in valid:
        raise ConfigError(f"{name} must be one of {', '.join(valid)}, got {value!r}")


def _integer(name, value, *, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
