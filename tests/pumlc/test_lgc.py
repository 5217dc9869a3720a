"""Local-Global Convolution: conversion, near-identity start, freezing, parameter count."""
import pytest
import torch
from torch import nn

from labelwise.errors import ConfigError
from labelwise.plugins.pumlc.lgc import (GlobalBranch, LocalGlobalConv, added_parameters, convert_to_lgc,
                                         freeze_for_lgc, init_global_branches)


def branch_parameters(cin, cout, heads=8, reduction=4):
    hidden = cin // reduction
    return ((cin * hidden + hidden) + 2 * (2 * hidden * heads + heads) + (cin * cin + cin)
            + (cin * cout + cout) + 2 * cout)


def test_global_branch_shapes_stride_and_parameter_count():
    branch = GlobalBranch(16, 32, stride=2)
    out = branch(torch.randn(2, 16, 8, 8))
    assert out.shape == (2, 32, 4, 4)
    assert sum(p.numel() for p in branch.parameters()) == branch_parameters(16, 32)


def test_global_branch_pools_with_attention_and_gates():
    branch = GlobalBranch(8, 8, num_heads=2, reduction=4).eval()
    with torch.no_grad():
        branch.norm.weight.fill_(1.0)
        branch.norm.running_var.fill_(1.0)
        for conv in (branch.pool_logits, branch.gate_logits):  # uniform pooling, gates 0.5
            conv.weight.zero_(); conv.bias.zero_()
        branch.value.weight.copy_(torch.eye(8)[:, :, None, None]); branch.value.bias.zero_()
        branch.proj.weight.copy_(torch.eye(8)[:, :, None, None]); branch.proj.bias.zero_()
    x = torch.randn(1, 8, 3, 3)
    expected = x + 0.5 * x.mean(dim=(2, 3), keepdim=True)  # x + gate * mean-pooled value
    assert torch.allclose(branch(x), expected / (1 + 1e-5) ** 0.5, atol=1e-5)


def test_lgc_starts_near_the_wrapped_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(4, 16, 8, 8)
    reference = conv(x)
    lgc = LocalGlobalConv(conv)
    out = lgc(x)  # train mode: the BN normalises, its weight ~ N(0, 1e-4) keeps the branch tiny
    assert (out - reference).abs().max() < 1e-2 * reference.abs().max()
    assert (out - reference).abs().max() > 0  # but it is there and trains
    assert lgc.global_branch.norm.weight.abs().max() < 1e-3


def test_convert_mmpretrain_resnet_and_timm_models():
    from mmpretrain.models import ResNet
    import timm

    backbone = ResNet(depth=18, base_channels=16, stem_channels=16)
    names = convert_to_lgc(backbone)
    assert len(names) == 16 and "layer1.0.conv1" in names and "layer4.1.conv2" in names  # BasicBlock: both convs
    assert backbone(torch.randn(2, 3, 32, 32))[-1].shape == (2, 128, 1, 1)
    resnext = timm.create_model("resnext26ts", pretrained=False, num_classes=3)
    assert len(convert_to_lgc(resnext, exclude=("stem",))) > 0
    assert not any(n.startswith("stem") for n, m in resnext.named_modules() if isinstance(m, LocalGlobalConv))
    assert resnext(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    assert convert_to_lgc(backbone) == []  # converting twice changes nothing


def test_resnet50_added_parameters():
    import timm

    model = timm.create_model("resnet50", pretrained=False)
    before = sum(p.numel() for p in model.parameters())
    names = convert_to_lgc(model)
    assert len(names) == 16  # one conv2 per bottleneck: 3 + 4 + 6 + 3
    widths = [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    expected = sum(branch_parameters(w, w) for w in widths)
    assert added_parameters(model) == expected == 2_875_824
    assert sum(p.numel() for p in model.parameters()) == before + expected


def test_no_3x3_conv_is_a_clear_error():
    with pytest.raises(ConfigError, match="Sequential has no 3x3 nn.Conv2d"):
        convert_to_lgc(nn.Sequential(nn.Linear(4, 4), nn.Conv2d(3, 3, 1)))


def test_heads_must_divide_channels():
    with pytest.raises(ConfigError, match="in_channels 12 is not divisible by num_heads 8"):
        convert_to_lgc(nn.Sequential(nn.Conv2d(12, 12, 3)))


def test_freeze_keeps_branches_last_stage_and_head_trainable_with_bn_in_eval():
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=4)
    convert_to_lgc(model)
    trainable = freeze_for_lgc(model, trainable=("layer4", "fc"))
    assert trainable and all("global_branch." in n or n.startswith(("layer4.", "fc.")) for n in trainable)
    assert any("layer1.0.conv1.global_branch" in n for n in trainable)
    assert not model.conv1.weight.requires_grad and not model.layer1[0].bn1.weight.requires_grad
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = model.layer2[0].bn1.running_mean.clone()
    model.layer2[0].bn1.train(False)
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.layer2[0].bn1.running_mean, before)


def test_init_global_branches_resets_bn_near_zero():
    model = nn.Sequential(nn.Conv2d(8, 8, 3))
    convert_to_lgc(model)
    branch = model[0].global_branch
    with torch.no_grad():
        branch.norm.weight.fill_(1.0)
    assert init_global_branches(model, seed=0) == 1
    assert branch.norm.weight.abs().max() < 1e-3 and branch.norm.bias.abs().max() == 0
