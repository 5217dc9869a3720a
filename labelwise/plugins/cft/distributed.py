"""CFT across processes: categories split over ``torch.distributed`` ranks, results gathered.

Categories are independent and seeded by their index (:func:`~labelwise.plugins.cft.engine.
category_seed`), so splitting them over ranks gives the same rows as one process.
"""
from __future__ import annotations

import numpy as np
import torch

from labelwise.plugins.cft.calibrate import CFTResult, _check_inputs, fit_calibrated_head, with_calibration
from labelwise.utils.distributed import is_main_process, join_process_group

__all__ = ["fit_calibrated_head_distributed", "init_from_env", "is_main_process"]


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group that ``torchrun`` describes in the environment, if any
    (:func:`labelwise.utils.distributed.join_process_group`). Returns True when running
    distributed (``WORLD_SIZE`` > 1).
    """
    return join_process_group(device).world_size > 1


def fit_calibrated_head_distributed(train_features, train_labels, val_features, val_labels, weight, bias, *,
                                    categories=None, progress: bool = True, **kwargs) -> CFTResult:
    """:func:`~labelwise.plugins.cft.calibrate.fit_calibrated_head`, split over ranks.

    Without an initialised process group (or with one rank) this is ``fit_calibrated_head``.
    Otherwise rank ``r`` of ``W`` calibrates categories ``r, r + W, r + 2W, ...`` of the
    requested ones, and every rank returns the merged result (only rank 0 should write it:
    see :func:`is_main_process`). A ``state_dir`` is shared: each rank saves the categories it
    ran, under distinct file names.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return fit_calibrated_head(train_features, train_labels, val_features, val_labels, weight, bias,
                                   categories=categories, progress=progress, **kwargs)
    rank, world = dist.get_rank(), dist.get_world_size()
    num_classes = np.asarray(weight.detach().cpu() if isinstance(weight, torch.Tensor) else weight).shape[0]
    wanted = sorted(set(range(num_classes) if categories is None else (int(c) for c in categories)))
    mine = wanted[rank::world]
    part = fit_calibrated_head(train_features, train_labels, val_features, val_labels, weight, bias,
                               categories=mine, progress=progress and rank == 0, **kwargs)
    payload = (mine, part.weight[mine].clone(), part.bias[mine].clone(), part.categories, part.seconds)
    parts = [None] * world
    dist.all_gather_object(parts, payload)
    weight_out, bias_out = part.weight.clone(), part.bias.clone()
    reports = []
    for cats, rows, biases, cat_reports, _ in parts:
        if cats:
            weight_out[cats], bias_out[cats] = rows, biases
        reports.extend(cat_reports)
    reports.sort(key=lambda r: r["index"])
    merged = CFTResult(weight_out, bias_out, reports, part.options, max(p[4] for p in parts))
    # each rank calibrated only its own rows: calibrate the merged head again (the same on every rank)
    data = _check_inputs(train_features, train_labels, val_features, val_labels, weight, bias)
    return with_calibration(merged, data["val_features"], data["val_labels"], data["weight"], data["bias"])
