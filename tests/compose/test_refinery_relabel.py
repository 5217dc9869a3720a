"""Refinery's teacher as ReLabel's annotator: `labelwise relabel` on a refinery generation."""
import json

import numpy as np
import torch

from compose.helpers import TINY


def test_relabel_from_a_refinery_generation_equals_the_teacher_loaded_directly(tiny_digits, tmp_path):
    """Generation 2 of `labelwise refine` (its config's refinery section filled with generation
    1) read by `labelwise relabel --config gen2/config.py --checkpoint ...`: the maps equal
    those written from the model the refinery spec loads (the teacher a generation 3 gets)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from labelwise.adapters.mmpretrain.refinery import build_refinery
    from labelwise.adapters.mmpretrain.runner import load_config
    from labelwise.checkpoint import save_checkpoint
    from labelwise.cli import main
    from labelwise.plugins.labelpool.annotator import DenseClassifier
    from labelwise.plugins.labelpool.relabel import WholeImageLoader, read_image_list, relabel
    from labelwise.plugins.labelpool.store import LabelMapStore

    # generation 1: seeded initial weights (--first-checkpoint); generation 2 trains against it
    cfg = load_config("refinery/digits_single", work_dir=tmp_path, cfg_options=TINY)
    init_default_scope("mmpretrain")
    model_cfg = cfg.model.to_dict()
    model_cfg["data_preprocessor"] = dict(type="ClsDataPreprocessor")
    torch.manual_seed(3)
    first = MODELS.build(model_cfg)
    first.init_weights()
    save_checkpoint({"state_dict": first.state_dict(), "meta": {}}, tmp_path / "gen1.pth")
    work = tmp_path / "refine"
    assert main(["refine", "--config", "refinery/digits_single", "--generations", "2", "--work-dir", str(work),
                 "--data-root", str(tiny_digits), "--epochs", "1", "--seed", "0",
                 "--first-checkpoint", str(tmp_path / "gen1.pth"), "--cfg-options",
                 *[f"{k}={v}" for k, v in TINY.items()]]) == 0
    gen2 = json.loads((work / "gen2" / "generation.json").read_text())
    assert Config.fromfile(gen2["config"]).data_preprocessor.refinery.checkpoint == str(tmp_path / "gen1.pth")

    via_cli = tmp_path / "maps-cli"
    assert main(["relabel", str(via_cli), "--data-root", str(tiny_digits), "--ann-file", "single/val.txt",
                 "--config", gen2["config"], "--checkpoint", gen2["checkpoint"], "--input-size", "64",
                 "--topk", "3", "--batch-size", "16", "--no-progress"]) == 0

    # the same generation as a refinery teacher, loaded by the refinery's own builder
    teacher = build_refinery(dict(config=gen2["config"], checkpoint=gen2["checkpoint"])).model
    pre = Config.fromfile(gen2["config"]).data_preprocessor

    class LastMap(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, x):
            return self.backbone(x)[-1]

    dense = DenseClassifier(LastMap(teacher.backbone), teacher.head.fc).eval()
    keys = read_image_list(tiny_digits, "single/val.txt")
    loader = WholeImageLoader(tiny_digits, size=64, mean=pre.mean, std=pre.std, bgr=not pre.to_rgb)
    direct = tmp_path / "maps-direct"
    relabel(dense, keys, loader, direct, input_size=64, k=3, batch_size=16, progress=False)

    a, b = LabelMapStore(via_cli), LabelMapStore(direct)
    assert a.keys == b.keys == keys and (a.height, a.width) == (2, 2)
    for key in keys:
        (sa, ia), (sb, ib) = a.get(key), b.get(key)
        assert np.array_equal(ia, ib) and np.array_equal(sa, sb)
    # and the maps are the teacher's prediction: its logits are the maps' spatial mean (k = C would be exact)
    x = torch.stack([loader(keys[0])])
    with torch.no_grad():
        assert torch.allclose(dense(x).mean(dim=(2, 3)), teacher(x, mode="tensor"), atol=1e-4)
