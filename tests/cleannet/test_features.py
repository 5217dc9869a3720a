"""Feature extraction (resumable, shardable under torchrun), the CLI workflow, score files."""
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
