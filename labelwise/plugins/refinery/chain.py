"""Generation chaining: generation t+1 is trained from scratch with generation t as refinery.

Framework-free driver: what "train one generation" means (mmpretrain Runner, timm loop) is
passed in as a function. Each generation lives in ``WORK_DIR/gen{t}/`` and is finished when
its ``generation.json`` exists; a later call reuses finished generations and trains the rest,
so an interrupted chain resumes at the generation it was in.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from labelwise.errors import ConfigError, DataError
from labelwise.utils.fileio import write_json

RECORD = "generation.json"
SUMMARY = "generations.json"


def generation_dir(work_dir, generation: int) -> Path:
    """``WORK_DIR/gen{generation}``."""
    return Path(work_dir) / f"gen{generation}"


def run_generations(
    work_dir,
    generations: int,
    train_generation: Callable[[int, dict | None, Path], dict],
    *,
    first: dict | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train generations ``1..generations``, each refined by the previous one.

    Args:
        work_dir: output folder; generation ``t`` goes to ``WORK_DIR/gen{t}``.
        generations: how many generations, ``>= 1``.
        train_generation: ``train_generation(t, refinery, gen_dir) -> record``. ``refinery`` is
            ``None`` for generation 1 (ground truth) and otherwise the previous generation's
            record; the returned record is a JSON-serialisable dict that must hold
            ``'checkpoint'`` (path of the weights the next generation's refinery loads) and
            should hold ``'metrics'``.
        first: a finished generation-1 record (e.g. ``{'checkpoint': ..., 'config': ...}``)
            to start from instead of training generation 1.
        log: where progress lines go.

    Returns:
        The records of generations ``1..generations``, each with ``generation``,
        ``refinery_checkpoint`` and ``seconds`` added. ``WORK_DIR/generations.json`` holds
        the same list.
    """
    if not isinstance(generations, int) or generations < 1:
        raise ConfigError(f"generations must be an integer >= 1, got {generations!r}")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    previous = None
    for t in range(1, generations + 1):
        gen_dir = generation_dir(work_dir, t)
        done = gen_dir / RECORD
        if t == 1 and first is not None:
            record = {**first, "generation": 1, "refinery_checkpoint": None, "seconds": 0.0, "given": True}
            log(f"generation 1: given ({record['checkpoint']})")
        elif done.exists():
            record = json.loads(done.read_text())
            if not Path(record.get("checkpoint", "")).is_file():
                raise DataError(f"{done} names checkpoint {record.get('checkpoint')!r}, which is missing; "
                                f"remove {gen_dir} to train generation {t} again")
            log(f"generation {t}: reusing {done}")
        else:
            gen_dir.mkdir(parents=True, exist_ok=True)
            log(f"generation {t}: training" + (f", refined by generation {t - 1}" if previous else
                                                " on the ground truth"))
            start = time.perf_counter()
            record = dict(train_generation(t, previous, gen_dir))
            if not Path(record.get("checkpoint", "")).is_file():
                raise DataError(f"generation {t} returned checkpoint {record.get('checkpoint')!r}, "
                                "which does not exist")
            record.update(generation=t, seconds=round(time.perf_counter() - start, 1),
                          refinery_checkpoint=previous["checkpoint"] if previous else None)
            write_json(done, record)
        if "metrics" in record:
            log(f"    metrics: {json.dumps(record['metrics'], sort_keys=True)}")
        records.append(record)
        previous = record
    write_json(work_dir / SUMMARY, records)
    return records
