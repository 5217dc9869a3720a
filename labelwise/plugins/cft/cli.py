"""``labelwise cft``: calibrate a head from a saved ``.npz`` or an mmpretrain config + checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

from labelwise.errors import ConfigError, DataError
from labelwise.plugins.cft.options import CALIBRATIONS, METRICS, OPTIMIZERS, THRESHOLD_OBJECTIVES, CFTOptions
from labelwise.utils.fileio import read_npz

NPZ_KEYS = ("train_features", "train_labels", "val_features", "val_labels", "weight", "bias")
_OPTION_FLAGS = ("optimizer", "metric", "epochs", "early_stopping", "population", "crossover_rate", "mutation_prob",
                 "mutation_range", "elitism", "lr", "gamma_neg", "gamma_pos", "clip", "seed", "chunk_rows", "threads",
                 "calibration", "threshold_objective", "calibration_bins")


def add_arguments(parser) -> None:
    """The options of ``labelwise cft``."""
    d = CFTOptions()
    src = parser.add_argument_group("input (one of)")
    src.add_argument("--npz", help="a .npz with train_features (N, D), train_labels (N, C) of 1/0/-1, val_features, "
                     "val_labels, weight (C, D), bias (C,) [and optionally class_names (C,)]")
    src.add_argument("--config", help="an mmpretrain config file or built-in name (with --checkpoint)")
    src.add_argument("--checkpoint", help="the trained mmpretrain checkpoint (with --config)")
    src.add_argument("--data-root", default=None, help="--config: replace the datasets' data_root")
    src.add_argument("--train-ann", default=None, help="--config: annotation file of the CFT training split "
                     "(default: the config's train dataset)")
    src.add_argument("--val-ann", default=None, help="--config: annotation file of the validation split "
                     "(default: the config's val dataset, else its test dataset)")
    parser.add_argument("--out", required=True, help="output folder: cft_head.npz, cft_report.json, cft_scores.png, "
                        "cft_reliability.png, cft_head.onnx (and calibrated.pth for --config, cft_model.onnx with "
                        "--full-onnx)")
    opt = parser.add_argument_group("CFT options (defaults: the reference schedule)")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                     help=f"ga, bp, or best = per category the best of original/GA/BP on validation (default: {d.optimizer})")
    opt.add_argument("--metric", choices=METRICS, default=d.metric, help=f"default: {d.metric}")
    opt.add_argument("--epochs", type=int, default=d.epochs, help=f"default: {d.epochs}")
    opt.add_argument("--early-stopping", type=int, default=d.early_stopping,
                     help=f"patience in epochs; 0 disables it (default: {d.early_stopping})")
    opt.add_argument("--population", type=int, default=d.population, help=f"default: {d.population}")
    opt.add_argument("--crossover-rate", type=float, default=d.crossover_rate, help=f"default: {d.crossover_rate}")
    opt.add_argument("--mutation-prob", type=float, default=d.mutation_prob, help=f"default: {d.mutation_prob}")
    opt.add_argument("--mutation-range", type=float, default=d.mutation_range, help=f"default: {d.mutation_range}")
    opt.add_argument("--elitism", type=int, default=d.elitism, help=f"default: {d.elitism}")
    opt.add_argument("--lr", type=float, default=d.lr, help=f"BP's Adam learning rate (default: {d.lr})")
    opt.add_argument("--gamma-neg", type=float, default=d.gamma_neg, help=f"default: {d.gamma_neg}")
    opt.add_argument("--gamma-pos", type=float, default=d.gamma_pos, help=f"default: {d.gamma_pos}")
    opt.add_argument("--clip", type=float, default=d.clip, help=f"default: {d.clip}")
    opt.add_argument("--seed", type=int, default=d.seed, help=f"default: {d.seed}")
    opt.add_argument("--chunk-rows", type=int, default=d.chunk_rows, help=f"default: {d.chunk_rows}")
    opt.add_argument("--threads", type=int, default=None, help="worker threads, each running whole categories (default: torch.get_num_threads()); results do not depend on it")
    cal = parser.add_argument_group("probability calibration (after CFT, on the known validation labels)")
    cal.add_argument("--calibration", choices=CALIBRATIONS, default=d.calibration,
                     help=f"per-class map from logit to probability (default: {d.calibration}; none: plain sigmoid)")
    cal.add_argument("--threshold-objective", choices=THRESHOLD_OBJECTIVES, default=d.threshold_objective,
                     help=f"per-class decision thresholds maximise this (default: {d.threshold_objective})")
    cal.add_argument("--calibration-bins", type=int, default=d.calibration_bins,
                     help=f"bins of the reported calibration errors (default: {d.calibration_bins})")
    run = parser.add_argument_group("run")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    run.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                     help="pytorch: under torchrun, split categories over the ranks; rank 0 writes (default: none)")
    run.add_argument("--no-onnx", action="store_true", help="do not export the ONNX head")
    run.add_argument("--full-onnx", action="store_true",
                     help="--config: also write cft_model.onnx, backbone + calibrated head in one graph (input RGB "
                     "images in 0..255), checked against PyTorch with onnxruntime; needs a model, so not with --npz")
    run.add_argument("--no-plot", action="store_true", help="do not write the PNG plots (scores, reliability diagram)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def options_from_args(args) -> CFTOptions:
    values = {name: getattr(args, name) for name in _OPTION_FLAGS}
    if values["early_stopping"] == 0:
        values["early_stopping"] = None
    return CFTOptions(**values)


def load_npz(path) -> dict:
    """Read the ``.npz`` input of ``labelwise cft`` (see :data:`NPZ_KEYS`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected a .npz with keys {', '.join(NPZ_KEYS)}")
    data = read_npz(path, what=f"a .npz with keys {', '.join(NPZ_KEYS)}")
    missing = [k for k in NPZ_KEYS if k not in data]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}; expected {', '.join(NPZ_KEYS)} "
                        f"(found {', '.join(sorted(data)) or 'nothing'})")
    return data


def check_output_folder(out: Path, options: CFTOptions, *, source) -> None:
    """Refuse an output folder holding the results of another CFT run.

    A ``cft_report.json`` there must come from the same source file (``.npz`` or checkpoint,
    compared by SHA-256) and the same result-changing options, else the run would overwrite
    another run's results. Resumable state (``cft_state/``) is checked by the state itself, and
    does not vouch for the report: a state from this run beside another run's report is refused.

    Raises:
        DataError: the report is unreadable or records another source or other options.
    """
    from labelwise.plugins.cft.outputs import OUTPUT_FILES, file_sha256

    report_path = out / OUTPUT_FILES["report"]
    if not report_path.is_file():
        return
    advice = f"use another --out or delete {out} to start over"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        found = dict(report.get("options") or {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"{report_path} is not a readable CFT report ({exc}); {advice}") from exc
    differ = [f"{key}: {found.get(key)!r}, now {value!r}" for key, value in options.result_dict().items()
              if found.get(key) != value]
    if Path(source).is_file() and report.get("source_sha256") != file_sha256(source):
        differ.insert(0, f"source {report.get('source')!r} with another SHA-256")
    if differ:
        raise DataError(f"{report_path} holds the results of another CFT run ({'; '.join(differ)}); {advice}")


def run(args) -> int:
    from labelwise.plugins.cft.distributed import init_from_env, is_main_process
    from labelwise.plugins.cft.outputs import OUTPUT_FILES, file_sha256
    from labelwise.workflows.cft import fit_and_write

    if bool(args.npz) == bool(args.config):
        raise ConfigError("give either --npz FILE or --config CONFIG --checkpoint CKPT")
    if args.full_onnx and args.npz:
        raise ConfigError(f"--full-onnx needs a model (--config CONFIG --checkpoint CKPT) to export backbone + "
                          f"calibrated head; --npz {args.npz} holds features only (cft_head.onnx is the head alone)")
    options = options_from_args(args)
    if args.launcher == "pytorch":
        init_from_env(args.device)
    out = Path(args.out)
    if args.config:
        if not args.checkpoint:
            raise ConfigError("--config needs --checkpoint")
        check_output_folder(out, options, source=args.checkpoint)
        from labelwise.adapters.mmpretrain.cft import calibrate_checkpoint

        summary = calibrate_checkpoint(args.config, args.checkpoint, out, options=options, data_root=args.data_root,
                                       train_ann=args.train_ann, val_ann=args.val_ann, device=args.device,
                                       onnx=not args.no_onnx, full_onnx=args.full_onnx, plot=not args.no_plot,
                                       progress=not args.no_progress)
    else:
        data = load_npz(args.npz)
        check_output_folder(out, options, source=args.npz)
        names = [str(n) for n in data["class_names"]] if "class_names" in data else None
        arrays = {k: data[k] for k in NPZ_KEYS}
        try:
            result = fit_and_write(
                arrays["train_features"], arrays["train_labels"], arrays["val_features"], arrays["val_labels"],
                arrays["weight"], arrays["bias"], options=options,
                class_names=names, out_dir=out,
                device=args.device, progress=not args.no_progress, source=str(args.npz),
                source_sha256=file_sha256(args.npz), onnx=not args.no_onnx, plot=not args.no_plot)
        except (DataError, ConfigError) as exc:
            if str(exc).split(":")[0] not in (*NPZ_KEYS, "class_names"):
                raise
            raise type(exc)(f"{args.npz}: {exc}") from exc  # the input checks name the array, not the file
        summary = result.summary()
    if is_main_process():
        before, after = summary["mean_score_before"], summary["mean_score_after"]
        scores = f"{before:.4f} -> {after:.4f}" if before is not None else "n/a (every category skipped)"
        print(f"cft {options.optimizer}: mean validation {options.metric.upper()} {scores}; "
              f"{len(summary['changed'])} of {summary['categories']} categories changed, {summary['skipped']} skipped; "
              f"{summary['seconds']:.1f} s; wrote {out}")
        print(calibration_line(out / OUTPUT_FILES["report"]))
        for line in files_lines(out):
            print(line)
    return 0


def calibration_line(report_path) -> str:
    """One line of the report's calibration errors (known validation labels, in-sample)."""
    cal = json.loads(Path(report_path).read_text()).get("calibration")
    if not cal:
        return "calibration: not in the report"
    before, after = cal["cft_sigmoid"]["overall"], cal["calibrated"]["overall"]
    return (f"calibration {cal['method']} on {after['known']} known validation entries (in-sample): ECE "
            f"{before['ece']:.4f} -> {after['ece']:.4f}, MCE {before['mce']:.4f} -> {after['mce']:.4f}, Brier "
            f"{before['brier']:.4f} -> {after['brier']:.4f}; {cal['threshold_objective']} thresholds "
            f"{min(cal['thresholds']):.3f}..{max(cal['thresholds']):.3f}")


def files_lines(out: Path) -> list[str]:
    """Lines naming the reliability diagram and the full-model ONNX of the report in ``out``, where written."""
    from labelwise.plugins.cft.outputs import OUTPUT_FILES

    report = json.loads((out / OUTPUT_FILES["report"]).read_text(encoding="utf-8"))
    lines = []
    if "reliability" in report.get("plots", {}):
        lines.append(f"reliability diagram: {out / report['plots']['reliability']}")
    if "full_onnx_max_abs_diff" in report:  # written by the --config path, which has mmpretrain
        from labelwise.adapters.mmpretrain.cft import FULL_ONNX

        lines.append(f"full model ONNX: {out / FULL_ONNX} (onnxruntime vs PyTorch: max |logit difference| "
                     f"{report['full_onnx_max_abs_diff']:.3g})")
    return lines
