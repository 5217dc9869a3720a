"""Local-Global Convolution (LGC) of PU-MLC: a global branch added to every 3x3 convolution.

Spec: ``shared/methods/pumlc.md`` ("Local-Global Convolution"). Framework-free (plain torch):
:func:`convert_to_lgc` works on any ``nn.Module`` tree, e.g. mmpretrain's ``ResNet`` or a
``timm.create_model('resnet50')``.
"""
from __future__ import annotations

import torch
from torch import nn

from labelwise.errors import ConfigError


class GlobalBranch(nn.Module):
    """The global branch: multi-head attention pooling over HW, broadcast back with gates.

    ``x_local = ReLU(conv1x1(Cin -> Cin / reduction)(x))``; ``x_hidden = [x_local,
    mean_HW(x_local)]``; per head, ``agg = softmax_HW(conv1x1(x_hidden))`` pools
    ``v = conv1x1(Cin -> Cin)(x)`` (split into ``num_heads`` groups) to one vector, which is
    broadcast over HW times ``gate = sigmoid(conv1x1(x_hidden))``; then
    ``BN(conv1x1(Cin -> Cout, stride)(x + v))``. The BN weight starts at N(0, 1e-4) and its bias at
    0, so the branch starts close to zero.

    Args:
        in_channels, out_channels: of the wrapped convolution.
        stride: of the wrapped convolution (applied by the output projection).
        num_heads: attention heads; must divide ``in_channels`` (default 8).
        reduction: ``Cin / reduction`` hidden channels (default 4).
        generator: source of the BN weight's initial values (default: torch's global one).
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride=1, num_heads: int = 8,
                 reduction: int = 4, generator: torch.Generator | None = None):
        super().__init__()
        if in_channels % num_heads:
            raise ConfigError(f"GlobalBranch: in_channels {in_channels} is not divisible by num_heads {num_heads}")
        hidden = max(in_channels // reduction, 1)
        self.num_heads = num_heads
        self.reduce = nn.Conv2d(in_channels, hidden, 1)
        self.pool_logits = nn.Conv2d(2 * hidden, num_heads, 1)
        self.gate_logits = nn.Conv2d(2 * hidden, num_heads, 1)
        self.value = nn.Conv2d(in_channels, in_channels, 1)
        self.proj = nn.Conv2d(in_channels, out_channels, 1, stride=stride)
        self.norm = nn.BatchNorm2d(out_channels)
        self.init_norm(generator=generator)

    def init_norm(self, *, generator: torch.Generator | None = None) -> None:
        """(Re-)initialise the output BN near zero: weight ~ N(0, 1e-4), bias 0.

        Frameworks that initialise every BatchNorm to weight 1 after building the model
        (mmengine's ``init_weights`` with a ResNet's ``init_cfg``) must call this afterwards.
        """
        with torch.no_grad():
            self.norm.weight.normal_(0.0, 1e-4, generator=generator)
            self.norm.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        local = torch.relu(self.reduce(x))
        hidden = torch.cat([local, local.mean(dim=(2, 3), keepdim=True).expand_as(local)], dim=1)
        pool = torch.softmax(self.pool_logits(hidden).flatten(2), dim=2)  # (B, heads, HW)
        gate = torch.sigmoid(self.gate_logits(hidden))  # (B, heads, H, W)
        value = self.value(x).view(b, self.num_heads, c // self.num_heads, h * w)
        pooled = torch.einsum("bngs,bns->bng", value, pool)  # (B, heads, C / heads)
        spread = pooled[..., None, None] * gate[:, :, None]  # (B, heads, C / heads, H, W)
        return self.norm(self.proj(x + spread.reshape(b, c, h, w)))


class LocalGlobalConv(nn.Module):
    """``conv(x) + GlobalBranch(x)``: a drop-in replacement of a 3x3 convolution.

    The wrapped convolution keeps its parameters under ``.conv``. A state dict written before
    the conversion (``...conv2.weight``) still loads into the converted model: the old names
    are mapped to ``...conv2.conv.weight`` on load, so ``load_from`` / ``init_cfg=Pretrained``
    after the conversion fill the wrapped convolutions, not just the new branches.
    """

    def __init__(self, conv: nn.Conv2d, *, num_heads: int = 8, reduction: int = 4,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.conv = conv
        self.global_branch = GlobalBranch(conv.in_channels, conv.out_channels, stride=conv.stride,
                                          num_heads=num_heads, reduction=reduction, generator=generator)
        self.global_branch.to(device=conv.weight.device, dtype=conv.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.global_branch(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("weight", "bias"):  # a checkpoint of the unconverted model
            old, new = prefix + name, prefix + "conv." + name
            if old in state_dict and new not in state_dict:
                state_dict[new] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _is_3x3(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (3, 3)


def _check_wrappable(name: str, conv: nn.Conv2d, num_heads: int) -> None:
    """The branch's 1x1 projection (same stride) matches the conv's output only when
    ``padding == dilation`` (or ``'same'``); its heads must divide the input channels."""
    if conv.padding == "same":
        aligned = True
    elif conv.padding == "valid":
        aligned = False
    else:
        aligned = tuple(conv.padding) == tuple(conv.dilation)
    if not aligned:
        raise ConfigError(f"convert_to_lgc: cannot wrap {name!r} (padding {conv.padding}, dilation "
                          f"{conv.dilation}): the global branch's output would not match the conv's "
                          f"spatial size; leave it out with exclude=({name!r},)")
    if conv.in_channels % num_heads:
        raise ConfigError(f"convert_to_lgc: cannot wrap {name!r}: its {conv.in_channels} input channels are "
                          f"not divisible by num_heads {num_heads}; leave it out with exclude=({name!r},) "
                          "(e.g. a deep stem's first conv) or choose num_heads")


def convert_to_lgc(model: nn.Module, *, num_heads: int = 8, reduction: int = 4, exclude: tuple = (),
                   seed: int | None = 0) -> list[str]:
    """Wrap every 3x3 ``nn.Conv2d`` of ``model`` in a :class:`LocalGlobalConv`, in place.

    Grouped or depth-wise 3x3 convolutions are wrapped too (the branch only needs the channel
    counts and the stride). Already converted convolutions are left alone, so converting twice
    is harmless.

    Args:
        model: e.g. a ResNet backbone (every bottleneck's conv2 / basic block's convs).
        num_heads: heads of each global branch; must divide each wrapped conv's input channels.
        reduction: channel reduction of the branch's hidden layer.
        exclude: qualified name prefixes to leave alone (e.g. ``('stem',)``).
        seed: seeds the BN initialisation of the branches (``None``: torch's global generator).
            The other branch layers use PyTorch's default initialisation from the global one.

    Returns:
        The qualified names of the wrapped convolutions.

    Raises:
        ConfigError: the model has no 3x3 convolution to wrap, or one that cannot be wrapped
            (``padding != dilation``, or input channels not divisible by ``num_heads``); the
            message names it. Nothing is converted in that case.
    """
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    wrapped = {name for name, m in model.named_modules() if isinstance(m, LocalGlobalConv)}
    targets = [name for name, m in model.named_modules()
               if _is_3x3(m) and name.rpartition(".")[0] not in wrapped
               and not any(name == p or name.startswith(p + ".") for p in exclude)]
    if not targets and not wrapped:
        raise ConfigError(f"convert_to_lgc: {type(model).__name__} has no 3x3 nn.Conv2d to wrap "
                          "(LGC needs a convolutional backbone such as a ResNet)")
    for name in targets:
        _check_wrappable(name, model.get_submodule(name), num_heads)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LocalGlobalConv(getattr(parent, child), num_heads=num_heads, reduction=reduction,
                                               generator=generator))
    return targets


def freeze_for_lgc(model: nn.Module, *, trainable: tuple = (), bn_eval: bool = True) -> list[str]:
    """The reference's fine-tuning regime: train only the global branches and ``trainable``.

    Sets ``requires_grad=False`` on every parameter except those of the global branches and of
    the modules whose qualified names start with one of ``trainable`` (e.g. ``('layer4',)`` on a
    bare backbone, ``('backbone.layer4', 'head')`` on a classifier). With ``bn_eval``, every
    BatchNorm (the branches' included, as in the reference) uses its running statistics from now on, whatever
    later ``model.train()`` calls do (a forward pre-hook puts it back in eval mode), so any
    training loop keeps the reference's frozen BatchNorms.

    Returns:
        Names of the parameters left trainable.
    """
    trainable_names = []
    for name, param in model.named_parameters():
        keep = "global_branch." in name or any(name.startswith(p + ".") or name == p for p in trainable)
        param.requires_grad_(keep)
        if keep:
            trainable_names.append(name)
    if bn_eval:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
                if not any(h is _stay_in_eval for h in m._forward_pre_hooks.values()):
                    m.register_forward_pre_hook(_stay_in_eval)
    return trainable_names


def _stay_in_eval(module: nn.Module, args) -> None:
    """Forward pre-hook of a frozen BatchNorm: always normalise with the running statistics."""
    module.training = False


def keep_bn_eval(model: nn.Module) -> None:
    """Put every BatchNorm of ``model`` in eval mode (running statistics frozen)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def init_global_branches(model: nn.Module, *, seed: int | None = 0) -> int:
    """Re-initialise the output BN of every global branch of ``model`` (see
    :meth:`GlobalBranch.init_norm`); returns how many branches were reset."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    branches = [m for m in model.modules() if isinstance(m, GlobalBranch)]
    for branch in branches:
        branch.init_norm(generator=generator)
    return len(branches)


def added_parameters(model: nn.Module) -> int:
    """Number of parameters in the global branches of a converted model."""
    return sum(p.numel() for n, p in model.named_parameters() if "global_branch." in n)
