"""CFT for timm models: pooled features, the classifier, calibration, and one-graph ONNX.

Features are ``model.forward_head(model.forward_features(x), pre_logits=True)`` in eval mode;
the final layer is ``model.get_classifier()`` (an ``nn.Linear``).

Example::

    from labelwise.adapters.timm.cft import calibrate_timm_model
    from labelwise.adapters.torch_data import DigitScenesDataset, digits_transform

    tf = digits_transform(train=False)   # no augmentation for CFT's features
    train = DigitScenesDataset(root, "partial-p0.3", "train", transform=tf)   # targets 1/0/-1
    val = DigitScenesDataset(root, "partial-p0.3", "val", transform=tf)
    result = calibrate_timm_model(model, DataLoader(train, 128), DataLoader(val, 128),
                                  out_dir="cft-out", apply=True)
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from labelwise.errors import ConfigError
from labelwise.plugins.cft.options import CFTOptions

__all__ = ["calibrate_timm_model", "export_timm_onnx", "extract_timm_features", "timm_classifier"]


def timm_classifier(model) -> nn.Linear:
    """The final layer of a timm model (``get_classifier()``), which must be an ``nn.Linear``."""
    fc = model.get_classifier()
    if not isinstance(fc, nn.Linear):
        raise ConfigError(f"CFT calibrates a linear classifier; {type(model).__name__}.get_classifier() is a "
                          f"{type(fc).__name__}")
    return fc


@torch.no_grad()
def extract_timm_features(model, loader, *, device=None, progress: bool = True):
    """Pre-logit features ``(N, D)`` and targets ``(N, C)`` (float, 1 / 0 / -1) over ``loader``."""
    from tqdm.auto import tqdm

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, targets = [], []
    for inputs, target in tqdm(loader, desc="cft features", disable=not progress, leave=False):
        x = model.forward_head(model.forward_features(inputs.to(device)), pre_logits=True)
        feats.append(x.float().cpu())
        targets.append(torch.as_tensor(target))
    model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(targets).numpy()


def calibrate_timm_model(model, train_loader, val_loader, *, options: CFTOptions | None = None, out_dir=None,
                         class_names=None, apply: bool = False, onnx: bool = True, full_onnx: bool = False,
                         example_input: torch.Tensor | None = None, plot: bool = True, device=None,
                         progress: bool = True, checkpoint=None, source: str | None = None):
    """Run CFT on a timm model's classifier.

    Args:
        model: a timm model.
        train_loader, val_loader: ``(images, targets)`` batches without augmentation; targets
            ``(B, C)`` with 1 / 0 / -1 (e.g. ``DigitScenesDataset(..., unknown_as='keep')``).
        options: :class:`~labelwise.plugins.cft.options.CFTOptions` (default: reference schedule).
        out_dir: if given, write the outputs there (as ``labelwise cft``), resuming from
            ``out_dir/cft_state``.
        class_names: names for the report and ONNX metadata (default ``"0"``, ``"1"``, ...).
        apply: copy the calibrated weights into ``model.get_classifier()``. Default False.
        onnx, plot: write the ONNX head / PNG (with ``out_dir``).
        full_onnx: also write ``cft_model.onnx``, the whole model with the calibrated
            classifier (needs ``example_input``, e.g. ``torch.zeros(1, 3, 64, 64)``, already
            normalised as the model expects).
        device: where to compute (default: the model's device).
        checkpoint: the file ``model``'s weights were loaded from, if any: its SHA-256 becomes
            ``source_sha256`` in the report and the ONNX metadata. Default ``None``: the key
            is left out (no single file is known to hold the weights).
        source: where the model came from, for the report and metadata. Default: ``checkpoint``
            (or ``""``).

    Returns:
        The :class:`~labelwise.plugins.cft.calibrate.CFTResult`.

    Raises:
        ConfigError: the classifier is not an ``nn.Linear``, or ``full_onnx`` without
            ``example_input``.
        DataError: ``checkpoint`` cannot be read.
    """
    from labelwise.utils.fingerprint import file_sha256
    from labelwise.workflows.cft import fit_and_write

    fc = timm_classifier(model)
    if out_dir is not None and full_onnx and example_input is None:
        raise ConfigError("full_onnx=True needs example_input, e.g. torch.zeros(1, 3, 64, 64)")
    source_sha256 = file_sha256(checkpoint) if checkpoint is not None and out_dir is not None else None
    source = str(checkpoint if checkpoint is not None else "") if source is None else str(source)
    device = device or fc.weight.device
    train_x, train_y = extract_timm_features(model, train_loader, device=device, progress=progress)
    val_x, val_y = extract_timm_features(model, val_loader, device=device, progress=progress)
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(fc.out_features)]

    def full_export(result) -> dict:
        if not full_onnx:
            return {}
        return {"full_onnx_max_abs_diff": export_timm_onnx(model, result, Path(out_dir) / "cft_model.onnx",
                                                           example_input, class_names=names, source=source,
                                                           source_sha256=source_sha256)}

    result = fit_and_write(train_x, train_y, val_x, val_y, fc.weight.detach().cpu(), fc.bias.detach().cpu(),
                           options=options or CFTOptions(), class_names=names, out_dir=out_dir, device=device,
                           progress=progress, source=source, source_sha256=source_sha256, onnx=onnx, plot=plot,
                           before_write=full_export)
    if apply:
        with torch.no_grad():
            fc.weight.copy_(result.weight.to(fc.weight.device))
            fc.bias.copy_(result.bias.to(fc.bias.device))
    return result


class _PreLogits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def export_timm_onnx(model, result, path, example_input: torch.Tensor, *, class_names, source: str = "",
                     source_sha256: str | None = None) -> float:
    """One ONNX graph: timm backbone + calibrated head (images -> logits, probabilities, labels).

    ``source`` and ``source_sha256`` (SHA-256 of the checkpoint file, left out when ``None``)
    go into the metadata.

    Returns the max abs difference between onnxruntime and PyTorch on random inputs.
    """
    from labelwise.plugins.cft.onnx_export import CalibratedHead, export_onnx, head_metadata, verify_onnx

    body = copy.deepcopy(model).cpu().eval()
    module = CalibratedHead.from_result(result, body=_PreLogits(body))
    shape = tuple(example_input.shape[1:])
    metadata = head_metadata(result, class_names, source=str(source), source_sha256=source_sha256,
                             inputs=f"images (batch, {', '.join(map(str, shape))}) float32, "
                             "normalised as the timm model expects")
    export_onnx(module, path, example_input.cpu(), metadata=metadata, input_name="images")
    generator = torch.Generator().manual_seed(result.options.seed)
    return verify_onnx(path, module, torch.randn(3, *shape, generator=generator))
