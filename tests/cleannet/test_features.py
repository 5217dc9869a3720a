"""Feature extraction (resumable, shardable under torchrun), the CLI workflow, score files."""
import json
import textwrap

import numpy as np
import pytest
import torch

from conftest import run_python
from labelwise.errors import DataError
from labelwise.plugins.cleannet.features import extract_features, load_features, save_features
from labelwise.plugins.cleannet.scorefile import read_scores, write_scores


def _toy(n=23, d=5):
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(n, d, generator=gen), torch.arange(n))
    weight = torch.rand(d, 3, generator=gen)
    return data, (lambda batch: torch.relu(batch[0] @ weight)), [f"img/{i:03d}.png" for i in range(n)]


def test_extract_features_is_batched_resumable_and_reusable(tmp_path):
    data, embed, ids = _toy()
    out = tmp_path / "f.npz"
    calls = []

    def failing(batch):
        calls.append(len(batch[0]))
        if len(calls) == 5:
            raise RuntimeError("interrupted")
        return embed(batch)

    with pytest.raises(RuntimeError, match="interrupted"):
        extract_features(failing, data, out=out, ids=ids, batch_size=4, chunk_size=8, progress=False)
    assert sorted(p.name for p in (tmp_path / "f.npz.parts").glob("chunk-*")) == ["chunk-000000.npy",
                                                                                    "chunk-000001.npy"]
    calls.clear()
    extract_features(failing, data, out=out, ids=ids, labels=np.arange(23) % 3, batch_size=4, chunk_size=8,
                     progress=False, meta={"model": "toy"})
    assert calls == [4, 3]  # only the last chunk (7 samples) was left
    fs = load_features(out)
    assert fs.ids == ids and fs.meta == {"model": "toy"} and not (tmp_path / "f.npz.parts").exists()
    np.testing.assert_allclose(fs.features, embed((data.tensors[0],)).numpy(), atol=1e-6)
    np.testing.assert_array_equal(fs.labels, np.arange(23) % 3)
    calls.clear()
    extract_features(failing, data, out=out, ids=ids, progress=False)  # reused, nothing computed
    assert calls == []
    with pytest.raises(DataError, match="holds features of other samples"):
        extract_features(embed, data, out=out, ids=[f"x{i}" for i in range(23)], progress=False)


def test_features_of_another_checkpoint_are_not_reused(tmp_path):
    """Same ids, other fingerprint (another checkpoint): a finished file is refused, an
    unfinished extraction is not resumed; overwrite recomputes with the new model."""
    data, embed, ids = _toy()
    a = {"checkpoint": {"bytes": 10, "sha256_ends": "aa"}}
    b = {"checkpoint": {"bytes": 10, "sha256_ends": "bb"}}
    out = tmp_path / "f.npz"
    extract_features(embed, data, out=out, ids=ids, meta={"model": "toy"}, fingerprint=a, progress=False)
    assert load_features(out).meta == {"model": "toy", "fingerprint": a}
    extract_features(None, data, out=out, ids=ids, fingerprint=a, progress=False)  # same: reused
    for other in (b, None):
        with pytest.raises(DataError, match=r"f\.npz exists and holds features made by another model, "
                                            r"checkpoint or config \(checkpoint: .*'aa'.*now .*\); "
                                            r"it is not reused: .*--overwrite"):
            extract_features(embed, data, out=out, ids=ids, fingerprint=other, progress=False)
    double = lambda batch: 2 * embed(batch)  # noqa: E731 - the model of checkpoint b
    extract_features(double, data, out=out, ids=ids, fingerprint=b, overwrite=True, progress=False)
    fs = load_features(out)
    assert fs.meta == {"fingerprint": b}
    np.testing.assert_allclose(fs.features, 2 * embed((data.tensors[0],)).numpy(), atol=1e-6)

    def failing(batch):
        if failing.calls == 2:
            raise RuntimeError("interrupted")
        failing.calls += 1
        return embed(batch)

    failing.calls = 0
    part = tmp_path / "g.npz"
    with pytest.raises(RuntimeError, match="interrupted"):
        extract_features(failing, data, out=part, ids=ids, batch_size=4, chunk_size=8, fingerprint=a, progress=False)
    with pytest.raises(DataError, match=r"g\.npz\.parts holds an unfinished extraction made by another model, "
                                        r"checkpoint or config \(checkpoint: .*'bb'.*\); it is not resumed"):
        extract_features(double, data, out=part, ids=ids, batch_size=4, chunk_size=8, fingerprint=b, progress=False)
    extract_features(double, data, out=part, ids=ids, batch_size=4, chunk_size=8, fingerprint=b, overwrite=True,
                     progress=False)
    np.testing.assert_allclose(load_features(part).features, 2 * embed((data.tensors[0],)).numpy(), atol=1e-6)


def test_timm_checkpoint_that_does_not_fit_names_the_file(tmp_path, tiny_digits):
    from labelwise.adapters.timm import create_digits_model
    from labelwise.adapters.timm.cleannet import timm_feature_extractor
    from labelwise.checkpoint import save_checkpoint
    from labelwise.errors import CheckpointError

    state = create_digits_model("resnet18", num_classes=10, width=32).state_dict()
    renamed = {("head." + k if k.startswith("fc.") else k): v for k, v in state.items()}
    save_checkpoint({"state_dict": renamed}, tmp_path / "renamed.pth")
    kwargs = dict(data_root=tiny_digits, ann_file="noisy-symmetric-r0.2/val.txt")
    with pytest.raises(CheckpointError, match=r"checkpoint .*renamed\.pth does not fit timm model 'resnet18' "
                                              r"\(num_classes=10, width=32\): 2 missing keys \['fc\.weight', "
                                              r"'fc\.bias'\], 2 unexpected keys "
                                              r"\['head\.fc\.weight', 'head\.fc\.bias'\]"):
        timm_feature_extractor("resnet18", tmp_path / "renamed.pth", **kwargs)
    save_checkpoint({"state_dict": state}, tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match=r"wide\.pth does not fit timm model 'resnet18' \(num_classes=10, "
                                              r"width=16\): size mismatch for .*"):
        timm_feature_extractor("resnet18", tmp_path / "wide.pth", width=16, **kwargs)
    job = timm_feature_extractor("resnet18", tmp_path / "wide.pth", **kwargs)  # fits: loads
    assert job["fingerprint"]["checkpoint"]["bytes"] == (tmp_path / "wide.pth").stat().st_size


def test_feature_file_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.zeros((2, 2)))
    with pytest.raises(DataError, match="is not a labelwise feature file"):
        load_features(bad)
    with pytest.raises(DataError, match="cannot read feature file"):
        load_features(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="expected features"):
        save_features(tmp_path / "x.npz", ["a"], np.zeros((2, 2)))


SHARD_SCRIPT = textwrap.dedent("""
    import sys, torch
    from labelwise.plugins.cleannet.features import extract_features
    {toy}
    if len(sys.argv) > 2:
        torch.distributed.init_process_group("gloo")
    data, embed, ids = _toy()
    extract_features(embed, data, out=sys.argv[1], ids=ids, batch_size=3, chunk_size=6, progress=False)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
""")


def test_torchrun_two_gloo_processes_equal_one(tmp_path):
    script = tmp_path / "shard.py"
    import inspect

    script.write_text(SHARD_SCRIPT.format(toy=textwrap.indent(inspect.getsource(_toy), "    ").strip()))
    env = {"OMP_NUM_THREADS": "1"}
    run_python(str(script), str(tmp_path / "one.npz"), env=env)
    run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(tmp_path / "two.npz"), "dist", env=env)
    one, two = load_features(tmp_path / "one.npz"), load_features(tmp_path / "two.npz")
    assert one.ids == two.ids
    np.testing.assert_array_equal(one.features, two.features)


def test_score_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "s.csv"
    scores = np.array([0.123456789, -0.5, 1.0], dtype=np.float32)
    write_scores(path, ["a.png", "b.png", "c.png"], [1, 2, 3], scores, [1, 0, 1])
    table = read_scores(path)
    assert table.ids == ["a.png", "b.png", "c.png"] and table.labels.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(table.scores.astype(np.float32), scores)  # float32 round-trips
    cases = {
        "id,label,score\na,1,0.5\n": r"header is 'id,label,score'; expected 'id,label,score,weight' \(missing: weight\)",
        "id,label,score,weight\na,1,nan,1\n": r"line 2: score is 'nan'; expected a finite number",
        "id,label,score,weight\na,1,0.5,1\na,2,0.5,1\n": r"line 3: id 'a' already appears on line 2",
        "id,label,score,weight\na,x,0.5,1\n": r"line 2: label 'x' is not a class id",
        "id,label,score,weight\na,1,3.0,1\n": r"score '3.0' is outside \[-1, 1\]",
        "id,label,score,weight\na,1,0.5\n": r"line 2: expected 4 fields",
        "": r"is empty",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(DataError, match=message):
            read_scores(path)


def test_cli_features_fit_score_on_digit_scenes(tiny_digits, tmp_path, capsys):
    """The whole workflow through `labelwise cleannet`: mmpretrain and timm features, fit
    (transfer setting), score with a histogram; ids and labels match the regime."""
    from labelwise.cli import main
    from labelwise.data import load_regime
    from labelwise.plugins.cleannet.store import load_cleannet

    regime = "noisy-symmetric-r0.2"
    for split in ("train", "val"):
        assert main(["cleannet", "features", "--data-root", str(tiny_digits), "--ann-file", f"{regime}/{split}.txt",
                     "--out", str(tmp_path / f"{split}.npz"), "--batch-size", "32", "--no-progress"]) == 0
    assert main(["cleannet", "features", "--framework", "timm", "--data-root", str(tiny_digits), "--ann-file",
                 f"{regime}/val.txt", "--out", str(tmp_path / "timm.npz"), "--no-progress"]) == 0
    train = load_regime(tiny_digits, regime, "train")
    fs = load_features(tmp_path / "train.npz")
    assert fs.ids == list(train.ids) and np.array_equal(fs.labels, train.labels)
    assert fs.features.shape == (160, 256) and fs.features.min() >= 0  # pooled post-ReLU features
    timm_fs = load_features(tmp_path / "timm.npz")
    assert timm_fs.features.shape == (40, 256) and timm_fs.ids == list(load_regime(tiny_digits, regime, "val").ids)

    labels_file = tiny_digits / regime / "train.labels.json"
    work = tmp_path / "work"
    assert main(["cleannet", "fit", "--features", str(tmp_path / "train.npz"), "--verification", str(labels_file),
                 "--val-features", str(tmp_path / "val.npz"), "--val-verification",
                 str(tiny_digits / regime / "val.labels.json"), "--verified-classes", "0,1,2,3,4", "--k", "4",
                 "--steps", "20", "--val-interval", "10", "--work-dir", str(work), "--no-progress"]) == 0
    model, refs, info = load_cleannet(work / "cleannet.pth")
    assert refs.shape == (10, 4, 256) and info["config"]["steps"] == 20 and len(info["history"]) == 2
    assert (work / "history.json").is_file()

    assert main(["cleannet", "score", "--model", str(work), "--features", str(tmp_path / "train.npz"), "--out",
                 str(tmp_path / "scores.csv"), "--weights", "soft", "--verification", str(labels_file),
                 "--histogram", str(tmp_path / "hist.png")]) == 0
    out = capsys.readouterr().out
    assert "noise-detection accuracy on 8 verified samples" in out  # 5 % of 160
    table = read_scores(tmp_path / "scores.csv")
    assert table.ids == list(train.ids) and np.array_equal(table.labels, train.labels)
    np.testing.assert_allclose(table.weights, np.maximum(table.scores, 0), atol=1e-6)
    assert (tmp_path / "hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["cleannet", "score", "--model", str(work), "--features", str(tmp_path / "nope.npz"), "--out",
                 str(tmp_path / "x.csv")]) == 2
    assert "cannot read feature file" in capsys.readouterr().err

    # provenance: features of another checkpoint into the same file, references of another seed
    from labelwise.adapters.timm import create_digits_model
    from labelwise.checkpoint import save_checkpoint

    save_checkpoint({"state_dict": create_digits_model("resnet18").state_dict()}, tmp_path / "timm.pth")
    timm_args = ["cleannet", "features", "--framework", "timm", "--data-root", str(tiny_digits), "--ann-file",
                 f"{regime}/val.txt", "--out", str(tmp_path / "timm.npz"), "--checkpoint", str(tmp_path / "timm.pth"),
                 "--no-progress"]
    assert main(timm_args) == 2
    err = capsys.readouterr().err
    assert "timm.npz exists and holds features made by another model, checkpoint or config (checkpoint: None" in err
    assert "--overwrite" in err and "Traceback" not in err
    assert main(timm_args + ["--overwrite"]) == 0
    assert load_features(tmp_path / "timm.npz").meta["fingerprint"]["checkpoint"]["bytes"] > 0
    fit_args = ["cleannet", "fit", "--features", str(tmp_path / "train.npz"), "--verification", str(labels_file),
                "--k", "4", "--steps", "2", "--val-interval", "2", "--work-dir", str(tmp_path / "work2"),
                "--no-progress"]
    assert main(fit_args) == 0
    assert main(fit_args) == 0 and "reusing" in capsys.readouterr().out  # same features and settings
    assert main(fit_args + ["--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "references.npy holds reference sets built from other features or settings (seed: 0, now 1)" in err
    assert "--overwrite" in err
    assert main(fit_args + ["--seed", "1", "--overwrite"]) == 0
    assert json.loads((tmp_path / "work2" / "references.json").read_text())["seed"] == 1


def test_mm_features_use_the_configs_data_preprocessor(tiny_digits):
    """Features are extracted from images normalised as in training (the config's top-level
    ``data_preprocessor``: mean 127.5, std 64, BGR -> RGB), not from raw pixels."""
    import torch

    from labelwise.adapters.mmpretrain.cleannet import mm_feature_extractor

    job = mm_feature_extractor("baseline/digits_noisy", None, data_root=tiny_digits,
                               ann_file="noisy-symmetric-r0.2/train.txt",
                               cfg_options={"model.backbone.base_channels": 8, "model.head.in_channels": 64})
    batch = job["collate_fn"]([job["dataset"][0], job["dataset"][1]])
    image = torch.stack(batch["inputs"]).float()
    expected_inputs = (image[:, [2, 1, 0]] - 127.5) / 64.0
    captured = {}
    handle = job["model"].backbone.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        job["embed"](batch)
    handle.remove()
    assert torch.allclose(captured["x"], expected_inputs, atol=1e-5)


def test_extract_features_shows_progress_only_when_asked(tmp_path, capsys):
    data, embed, ids = _toy()
    extract_features(embed, data, out=tmp_path / "a.npz", ids=ids, batch_size=4, chunk_size=8, progress=True)
    shown = capsys.readouterr().err
    assert "features:" in shown and "/23 [" in shown and "img/s" in shown  # a bar over the 23 samples
    extract_features(embed, data, out=tmp_path / "b.npz", ids=ids, batch_size=4, chunk_size=8, progress=False)
    assert "features" not in capsys.readouterr().err
