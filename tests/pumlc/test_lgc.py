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


def test_unwrappable_convs_are_named_and_nothing_is_converted():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1))
    with pytest.raises(ConfigError, match=r"cannot wrap '0': its 3 input channels .* exclude=\('0',\)"):
        convert_to_lgc(model)
    assert not any(isinstance(m, LocalGlobalConv) for m in model.modules())
    assert convert_to_lgc(model, exclude=("0",)) == ["1"]
    valid = nn.Sequential(nn.Conv2d(8, 8, 3))  # padding 0: output smaller than the branch's
    with pytest.raises(ConfigError, match=r"cannot wrap '0' \(padding \(0, 0\), dilation \(1, 1\)\)"):
        convert_to_lgc(valid)
    dilated = nn.Sequential(nn.Conv2d(8, 8, 3, padding=2, dilation=2, stride=2))
    convert_to_lgc(dilated)
    assert dilated(torch.randn(2, 8, 9, 9)).shape == (2, 8, 5, 5)


def test_checkpoint_of_the_unconverted_model_loads_into_the_converted_one():
    import timm

    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False, num_classes=4)
    state = source.state_dict()
    torch.manual_seed(1)
    target = timm.create_model("resnet18", pretrained=False, num_classes=4)
    convert_to_lgc(target)
    result = target.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert all("global_branch" in k for k in result.missing_keys)  # only the new branches
    assert torch.equal(target.layer1[0].conv1.conv.weight, source.layer1[0].conv1.weight)
    assert torch.equal(target.layer4[1].conv2.conv.weight, source.layer4[1].conv2.weight)
    # and mmengine's own non-strict loader (used by load_from / init_cfg=Pretrained)
    from mmengine.runner.checkpoint import load_state_dict

    torch.manual_seed(2)
    again = timm.create_model("resnet18", pretrained=False, num_classes=4)
    convert_to_lgc(again)
    load_state_dict(again, state, strict=False)
    assert torch.equal(again.layer2[0].conv2.conv.weight, source.layer2[0].conv2.weight)


def test_freeze_keeps_branches_last_stage_and_head_trainable_with_bn_in_eval():
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=4)
    convert_to_lgc(model)
    trainable = freeze_for_lgc(model, trainable=("layer4", "fc"))
    assert trainable and all("global_branch." in n or n.startswith(("layer4.", "fc.")) for n in trainable)
    assert any("layer1.0.conv1.global_branch" in n for n in trainable)
    assert not model.conv1.weight.requires_grad and not model.layer1[0].bn1.weight.requires_grad
    before = {n: b.clone() for n, b in model.named_buffers() }
    model.train()  # any loop calls this; frozen BatchNorms must keep their running statistics
    model(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers() )


def test_frozen_batchnorm_stays_frozen_through_the_timm_task_and_fit(tiny_digits):
    from labelwise.adapters.loop import fit
    from labelwise.adapters.timm import create_digits_model
    from labelwise.adapters.timm.pumlc import PUMLCTask
    from labelwise.adapters.torch_data import DigitScenesDataset, digits_transform

    torch.manual_seed(0)
    model = create_digits_model(width=8)
    convert_to_lgc(model)
    freeze_for_lgc(model, trainable=("layer4", "fc"))
    before = {n: b.clone() for n, b in model.named_buffers() }
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    head_before = model.fc.weight.clone()
    data = DigitScenesDataset(tiny_digits, "partial-p0.3", "train", transform=digits_transform(train=True, size=32))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(64)), batch_size=32, drop_last=True)
    fit(PUMLCTask(model), loader, epochs=1, progress=False)
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers() )
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)
    assert not torch.equal(model.fc.weight, head_before)  # the trainable part did train


def test_init_global_branches_resets_bn_near_zero():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1))
    convert_to_lgc(model)
    branch = model[0].global_branch
    with torch.no_grad():
        branch.norm.weight.fill_(1.0)
    assert init_global_branches(model, seed=0) == 1
    assert branch.norm.weight.abs().max() < 1e-3 and branch.norm.bias.abs().max() == 0
