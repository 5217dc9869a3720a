"""The plugin's hook implementations (found through the ``labelwise.plugins`` entry point)."""
import labelwise


@labelwise.hookimpl
def labelwise_methods():
    return [labelwise.MethodInfo(
        name="partial-focal",
        summary="focal BCE on partial labels, unknowns ignored (example plugin)",
        kind="loss",
        paper="Lin et al., Focal Loss for Dense Object Detection, ICCV 2017",
        types=("labelwise.PartialFocalLoss",),
    )]


@labelwise.hookimpl
def labelwise_register_mm_modules(registries):
    from labelwise_focal.loss import PartialFocalLoss  # torch only when mmengine asks

    registries.MODELS.register_module(module=PartialFocalLoss)


@labelwise.hookimpl
def labelwise_add_commands(subparsers):
    check = subparsers.add_parser("focal-check", help="print the partial focal loss of a tiny example")
    check.add_argument("--gamma", type=float, default=2.0, help="focusing parameter (default: 2.0)")
    check.set_defaults(func=_check)


def _check(args) -> int:
    import torch

    from labelwise_focal.loss import partial_focal_loss

    logits = torch.tensor([[2.0, -1.0, 0.5]])
    targets = torch.tensor([[1, 0, -1]])
    print(f"partial focal loss (gamma={args.gamma}) of logits {logits.tolist()[0]} "
          f"with labels {targets.tolist()[0]}: {partial_focal_loss(logits, targets, gamma=args.gamma).item():.4f}")
    return 0
