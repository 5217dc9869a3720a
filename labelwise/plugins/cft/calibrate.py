"""``fit_calibrated_head``: CFT on features, partial labels and a trained final layer.

Category-wise Fine-Tuning ("Category-wise Fine-Tuning: Resisting Incorrect Pseudo-Labels in
Multi-Label Image Classification with Partial Labels", arXiv 2401.16991, ICONIP 2023) re-fits
the final linear layer of a model trained with pseudo-labels, one category (one row) at a
time, on the **known** labels only, to maximise that category's metric directly. The result
is never worse than the original on validation: a row changes only on a strict improvement.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from labelwise.errors import ConfigError, DataError
from labelwise.labels import check_partial_labels
from labelwise.plugins.cft.engine import (CategoryRows, OptimizerResult, category_seed, make_job, run_bp, run_ga,
                                         workers_for)
from labelwise.plugins.cft.options import CFTOptions
from labelwise.utils.fileio import write_json

__all__ = ["CFTResult", "fit_calibrated_head", "with_calibration"]

STATE_FORMAT = "labelwise-cft-state/1"


@dataclasses.dataclass
class CFTResult:
    """The calibrated final layer and what happened to each category.

    Attributes:
        weight: ``(C, D)`` float32, calibrated (rows of categories not run are the original).
        bias: ``(C,)`` float32.
        categories: one report dict per category that was asked for, in category order:
            ``index``, ``name``, ``train_known``, ``train_positive``, ``val_known``,
            ``val_positive``, ``skipped`` (``None`` or why), ``score_before`` and
            ``score_after`` (validation; ``None`` when skipped), ``chosen`` (``'original'``,
            ``'ga'`` or ``'bp'``), ``changed`` (bool), ``seed``, and per optimiser run
            (``'ga'``/``'bp'``): ``score``, ``epochs_run``, ``best_at``.
        options: the :class:`CFTOptions` used.
        seconds: wall time of the run.
        calibration: the per-class probability calibration fitted after CFT on the known
            validation labels (:class:`~labelwise.plugins.cft.calibration.Calibration`), or
            ``None`` for ``calibration='none'``.
        thresholds: ``(C,)`` per-class decision thresholds on the calibrated probabilities.
        calibration_report: errors before / after and the thresholds (see
            :func:`~labelwise.plugins.cft.calibration.calibrate_logits`).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    categories: list
    options: CFTOptions
    seconds: float = 0.0
    calibration: object = None
    thresholds: np.ndarray | None = None
    calibration_report: dict | None = None

    @property
    def changed(self) -> list[int]:
        """Indices of the categories whose row changed."""
        return [c["index"] for c in self.categories if c["changed"]]

    def summary(self) -> dict:
        """Means of the validation scores over the categories not skipped, and counts."""
        run = [c for c in self.categories if c["skipped"] is None]
        mean = (lambda key: float(np.mean([c[key] for c in run])) if run else None)
        chosen = {name: sum(c["chosen"] == name for c in run) for name in ("original", "ga", "bp")}
        return {"metric": self.options.metric, "categories": len(self.categories), "skipped": len(self.categories) - len(run),
                "changed": self.changed, "chosen": chosen, "mean_score_before": mean("score_before"),
                "mean_score_after": mean("score_after"), "seconds": round(self.seconds, 3)}

    def report(self, **extra) -> dict:
        """A JSON-serialisable report: options, summary, per-category rows, and ``extra``."""
        return {"format": "labelwise-cft-report/1", "options": dataclasses.asdict(self.options),
                "summary": self.summary(), "categories": self.categories,
                "calibration": self.calibration_report, **extra}


def fit_calibrated_head(
    train_features, train_labels, val_features, val_labels, weight, bias, *,
    options: CFTOptions | None = None,
    categories=None,
    class_names=None,
    device: str | torch.device = "cpu",
    state_dir=None,
    progress: bool = True,
) -> CFTResult:
    """Calibrate each category's row of a final linear layer on its known labels (CFT).

    For each category ``c``: keep the rows whose label for ``c`` is known (train and
    validation separately); skip the category (keep its row) if either split lacks a known
    positive or a known negative; else start from the trained row, whose validation score is
    the one to beat, run the optimiser(s) of ``options`` and keep the best row on validation.

    Args:
        train_features: ``(N, D)`` penultimate features of the training split (eval mode, no
            augmentation); array-like or tensor, computed in float32.
        train_labels: ``(N, C)`` with 1 / 0 / -1 (or NaN) = positive / negative / unknown.
        val_features: ``(M, D)`` features of the validation split.
        val_labels: ``(M, C)`` labels of the validation split.
        weight: ``(C, D)`` trained final-layer weight.
        bias: ``(C,)`` trained final-layer bias.
        options: a :class:`CFTOptions` (default: ``CFTOptions()``, the reference schedule).
        categories: indices of the categories to calibrate (default: all). The others keep
            their rows and are left out of the report (used to split work across processes).
        class_names: ``C`` names for the report (default ``"0"``, ``"1"``, ...).
        device: where to compute (``'cpu'``, ``'cuda'``, ...).
        state_dir: if given, every finished (category, optimiser) is saved there, and a run
            with the same inputs and options resumes from what is there.
        progress: show a progress bar.

    Returns:
        A :class:`CFTResult`.

    Raises:
        DataError: shapes disagree, labels are not 1 / 0 / -1 / NaN, features are not finite,
            or ``state_dir`` holds the state of a different run.
        ConfigError: bad ``categories`` or ``class_names``.
    """
    start_time = time.perf_counter()
    options = options or CFTOptions()
    device = torch.device(device)
    data = _check_inputs(train_features, train_labels, val_features, val_labels, weight, bias)
    num_classes, dim = data["weight"].shape
    names = _class_names(class_names, num_classes)
    wanted = _categories(categories, num_classes)
    state = _State(state_dir, data, options) if state_dir is not None else None

    train_x = torch.as_tensor(data["train_features"], device=device)
    val_x = torch.as_tensor(data["val_features"], device=device)
    rows = torch.cat([torch.as_tensor(data["weight"]), torch.as_tensor(data["bias"])[:, None]], dim=1).to(device)
    # a category holds a contiguous copy of its known rows (train and validation) only while it
    # runs, and `workers` categories run at once: they share the cache budget
    per_category = options.cache_bytes // workers_for(options, device)
    need = {(split, c): int((labels[:, c] >= 0).sum()) * dim * 4
            for split, labels in (("train", data["train_labels"]), ("val", data["val_labels"])) for c in wanted}

    def split_rows(x, labels, c):
        known = labels[:, c] >= 0
        index = torch.as_tensor(np.flatnonzero(known), dtype=torch.int64)
        cache = need["train", c] + need["val", c] <= per_category
        return CategoryRows(x, index, labels[known, c] == 1, cache=cache, chunk_rows=options.chunk_rows)

    reports, jobs, done = {}, {name: [] for name in options.optimizers}, {}
    for c in wanted:
        report = _base_report(c, names[c], data["train_labels"][:, c], data["val_labels"][:, c], options)
        reports[c] = report
        if report["skipped"] is not None:
            continue
        for name in options.optimizers:
            saved = state.load(c, name) if state is not None else None
            if saved is not None:
                done[c, name] = saved
        todo = [name for name in options.optimizers if (c, name) not in done]
        train = split_rows(train_x, data["train_labels"], c) if todo else None
        val = split_rows(val_x, data["val_labels"], c)
        job = make_job(c, train, val, rows[c], options)
        report["score_before"] = job.start_score
        for name in todo:
            jobs[name].append(make_job(c, train, val, rows[c], options) if name != todo[0] else job)

    total = sum(len(v) for v in jobs.values())
    bar = _progress(total, progress)
    try:
        for name, runner in (("ga", run_ga), ("bp", run_bp)):
            if not jobs.get(name):
                continue

            def finished(c, result, name=name):
                done[c, name] = result
                if state is not None:
                    state.save(c, name, result)
                bar.update(1)

            def round_done(running, name=name):
                bar.set_postfix_str(f"{name}: {running} categories to finish", refresh=False)

            runner(jobs[name], options, on_done=finished, on_round=round_done)
    finally:
        bar.close()

    weight_out = data["weight"].copy()
    bias_out = data["bias"].copy()
    for c in wanted:
        report = reports[c]
        if report["skipped"] is not None:
            continue
        best_name, best_score = "original", report["score_before"]
        for name in options.optimizers:
            result = done[c, name]
            report[name] = {"score": result.score, "epochs_run": result.epochs_run, "best_at": result.best_at}
            if result.score > best_score:
                best_name, best_score = name, result.score
        report["chosen"], report["score_after"] = best_name, best_score
        if best_name != "original":
            row = done[c, best_name].row.numpy()
            weight_out[c], bias_out[c] = row[:-1], row[-1]
            report["changed"] = bool(not np.array_equal(row[:-1], data["weight"][c]) or row[-1] != data["bias"][c])
    result = CFTResult(torch.from_numpy(weight_out), torch.from_numpy(bias_out), [reports[c] for c in wanted], options,
                       time.perf_counter() - start_time)
    return with_calibration(result, data["val_features"], data["val_labels"], data["weight"], data["bias"])


def with_calibration(result: CFTResult, val_features, val_labels, weight, bias) -> CFTResult:
    """``result`` with the probability calibration of its head fitted on the known validation labels.

    Args:
        result: a :class:`CFTResult` (its ``weight`` / ``bias`` are the re-fitted head).
        val_features, val_labels: ``(M, D)`` and ``(M, C)`` (1 / 0 / -1), already checked.
        weight, bias: the original head, for the "before" figures of the report.
    """
    from labelwise.plugins.cft.calibration import calibrate_logits

    options = result.options
    val_x = np.asarray(val_features, dtype=np.float64)
    weight_out, bias_out = result.weight.numpy().astype(np.float64), result.bias.numpy().astype(np.float64)
    calibration, thresholds, calibration_report = calibrate_logits(
        val_x @ np.asarray(weight, dtype=np.float64).T + np.asarray(bias, dtype=np.float64),
        val_x @ weight_out.T + bias_out, val_labels, method=options.calibration,
        objective=options.threshold_objective, bins=options.calibration_bins)
    return dataclasses.replace(result, calibration=calibration, thresholds=thresholds,
                               calibration_report=calibration_report)


def _base_report(c, name, train_labels, val_labels, options) -> dict:
    counts = {"train_known": int((train_labels >= 0).sum()), "train_positive": int((train_labels == 1).sum()),
              "val_known": int((val_labels >= 0).sum()), "val_positive": int((val_labels == 1).sum())}
    skipped = None
    for split in ("train", "val"):
        known, positive = counts[f"{split}_known"], counts[f"{split}_positive"]
        if positive == 0 or positive == known:
            what = "positive" if positive == 0 else "negative"
            skipped = f"no known {what} in the {'training' if split == 'train' else 'validation'} labels"
            break
    return {"index": c, "name": name, **counts, "skipped": skipped, "score_before": None, "score_after": None,
            "chosen": "original", "changed": False, "seed": category_seed(options.seed, c)}


def _check_inputs(train_features, train_labels, val_features, val_labels, weight, bias) -> dict:
    def array(value, name, ndim):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if arr.ndim != ndim or arr.dtype.kind not in "fiu":  # real numbers (complex would lose a part)
            raise DataError(f"{name}: expected a {ndim}-D numeric array, got shape {arr.shape} and dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise DataError(f"{name}: holds NaN or infinite values; expected finite numbers")
        return arr

    w = array(weight, "weight", 2)
    c, d = w.shape
    if c == 0 or d == 0:
        raise DataError(f"weight: shape {w.shape}; expected a final layer of at least 1 class and 1 feature")
    b = array(bias, "bias", 1)
    if b.shape != (c,):
        raise DataError(f"bias: expected shape ({c},) to match weight {w.shape}, got {b.shape}")
    out = {"weight": w, "bias": b}
    for split in ("train", "val"):
        x = array(train_features if split == "train" else val_features, f"{split}_features", 2)
        if x.shape[1] != d:
            raise DataError(f"{split}_features: expected {d} columns to match weight {w.shape}, got {x.shape[1]}")
        raw = train_labels if split == "train" else val_labels
        if isinstance(raw, torch.Tensor):
            raw = raw.detach().cpu().numpy()
        y = check_partial_labels(raw, name=f"{split}_labels", num_classes=c)
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{split}_labels: {y.shape[0]} rows, but {split}_features has {x.shape[0]}")
        out[f"{split}_features"], out[f"{split}_labels"] = x, y
    return out


def _class_names(class_names, num_classes) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ConfigError(f"class_names: expected {num_classes} names, got {len(names)}")
    return names


def _categories(categories, num_classes) -> list[int]:
    if categories is None:
        return list(range(num_classes))
    out = sorted({int(c) for c in categories})
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"categories: {bad} out of range; expected indices in [0, {num_classes})")
    return out


def _progress(total, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="cft categories", unit="cat", disable=not enabled)


def fingerprint(data: dict, options: CFTOptions) -> str:
    """SHA-256 of the inputs and the result-changing options (identifies a resumable run)."""
    h = hashlib.sha256()
    for key in sorted(data):
        arr = np.ascontiguousarray(data[key])
        h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    h.update(json.dumps(options.result_dict(), sort_keys=True).encode())
    return h.hexdigest()


class _State:
    """Per-(category, optimiser) results in ``state_dir``, for resuming an interrupted run."""

    def __init__(self, state_dir, data, options):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint(data, options)
        self.row_length = int(data["weight"].shape[1]) + 1  # the weight row and the bias
        meta = self.dir / "state.json"
        if meta.exists():
            found = _read_state_json(meta).get("fingerprint")
            if found != self.fingerprint:
                raise DataError(
                    f"{meta}: holds the state of a different CFT run (other inputs or options); "
                    f"use another output folder (--out) or delete {self.dir} to start over")
        else:
            write_json(meta, {"format": STATE_FORMAT, "fingerprint": self.fingerprint})

    def _path(self, c, name) -> Path:
        return self.dir / f"category{c:05d}-{name}.json"

    def load(self, c, name) -> OptimizerResult | None:
        path = self._path(c, name)
        if not path.exists():
            return None
        saved = _read_state_json(path)
        try:
            row = torch.tensor(saved["row"], dtype=torch.float32)
            result = OptimizerResult(row, float(saved["score"]), int(saved["epochs_run"]), int(saved["best_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: not a CFT category result (expected keys row, score, epochs_run, best_at; "
                            f"{type(exc).__name__}: {exc}); delete it to recompute that category") from exc
        problem = (f"row has shape {tuple(row.shape)}, expected ({self.row_length},) (the weight row and the bias)"
                   if tuple(row.shape) != (self.row_length,)
                   else "row holds NaN or infinite values" if not bool(torch.isfinite(row).all())
                   else f"score {result.score!r} is not a finite number" if not math.isfinite(result.score)
                   else None)
        if problem:
            raise DataError(f"{path}: {problem}; delete it to recompute that category")
        return result

    def save(self, c, name, result: OptimizerResult) -> None:
        write_json(self._path(c, name), {"row": result.row.tolist(), "score": result.score,
                                          "epochs_run": result.epochs_run, "best_at": result.best_at}, indent=None)


def _read_state_json(path: Path) -> dict:
    """A resume file as a dict, or a DataError naming it (e.g. cut short by a crash of an
    older version, or edited by hand)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable CFT resume file ({exc}); delete it to recompute it") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}; delete it to recompute it")
    return data
