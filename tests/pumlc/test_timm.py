"""PU-MLC for timm / plain PyTorch: the task trains with labelwise's loop on partial labels."""
import pytest
import torch

pytest.importorskip("timm")


def test_pumlc_task_with_lgc_trains_on_digit_scenes(tiny_digits):
    from labelwise.adapters.loop import fit
    from labelwise.adapters.timm import create_digits_model
    from labelwise.adapters.timm.pumlc import PUMLCTask
    from labelwise.adapters.torch_data import DigitScenesDataset, digits_transform
    from labelwise.plugins.pumlc.lgc import convert_to_lgc

    data = DigitScenesDataset(tiny_digits, "partial-p0.3", "train", transform=digits_transform(train=True, size=32))
    image, target = data[0]
    assert set(target.unique().tolist()) <= {-1.0, 0.0, 1.0} and (target == -1).any()
    torch.manual_seed(0)
    model = create_digits_model(width=8)
    assert len(convert_to_lgc(model)) == 16
    task = PUMLCTask(model, mixup_alpha=0.3, generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    history = fit(task, loader, epochs=2, lr=0.002, progress=False)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h)) for h in history)
    result = task(image[None].repeat(4, 1, 1, 1), target[None].repeat(4, 1))
    assert {"loss", "loss_pu", "loss_mixup", "output"} <= set(result)
