"""Second hardening pass: nothing overwritten that a command did not create, files that honour
the umask, score files a spreadsheet opens without running formulas."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from labelwise.cli import main

from reliability.conftest import CFT_OPTIONS, score_argv

pytestmark = pytest.mark.reliability


# --- score files opened in a spreadsheet ---------------------------------------------------------


@pytest.mark.parametrize("sample_id", ["=HYPERLINK(\"http://x.invalid\",\"a\")", "+1+2", "-3", "@SUM(A1)",
                                       "\tx.png", "'quoted.png", "''=x", "images/a.png"])
def test_formula_ids_are_neutralised_and_round_trip(tmp_path, sample_id):
    from labelwise.plugins.cleannet.scorefile import read_scores, write_scores

    path = tmp_path / "scores.csv"
    write_scores(path, [sample_id, "b.png"], [1, 2], [0.5, -0.25], [1.0, 0.0])
    first_cell = path.read_text().splitlines()[1].split(",")[0].strip('"')
    assert not first_cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    if sample_id != "images/a.png":
        assert first_cell.startswith("'")
    assert read_scores(path).ids == [sample_id, "b.png"]  # exactly, a leading tab included


# --- outputs that would overwrite another file ---------------------------------------------------


def test_histogram_never_overwrites_the_scores_the_model_or_a_foreign_file(cleannet_inputs, tmp_path, capsys):
    features, model = cleannet_inputs
    model_bytes = model.read_bytes()
    out = tmp_path / "s.csv"
    for histogram, message in ((out, "--histogram .*s.csv is the same file as --out"),
                               (model, "--histogram .*cleannet.pth is the same file as --model"),
                               (features, "--histogram .*features.npz is the same file as --features")):
        capsys.readouterr()
        assert main(score_argv(str(model), str(features), str(out), "--histogram", str(histogram))) == 2
        err = capsys.readouterr().err
        assert err.startswith("labelwise cleannet: error: ") and "Traceback" not in err
        import re

        assert re.search(message, err), err
    assert model.read_bytes() == model_bytes and not out.exists()

    foreign = tmp_path / "holiday.png"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n someone's picture")
    assert main(score_argv(str(model), str(features), str(out), "--histogram", str(foreign))) == 2
    assert "is not a plot labelwise wrote" in capsys.readouterr().err
    assert foreign.read_bytes() == b"\x89PNG\r\n\x1a\n someone's picture" and not out.exists()

    # its own plot is drawn again by a re-run of the same command
    plot = tmp_path / "h.png"
    assert main(score_argv(str(model), str(features), str(out), "--histogram", str(plot))) == 0
    assert main(score_argv(str(model), str(features), str(out), "--histogram", str(plot))) == 0
    # and --overwrite replaces a foreign file when asked
    assert main(score_argv(str(model), str(features), str(out), "--histogram", str(foreign), "--overwrite")) == 0
    assert foreign.read_bytes().startswith(b"\x89PNG") and b"labelwise" in foreign.read_bytes()[:4096]


def test_cft_state_of_this_run_does_not_vouch_for_another_runs_report(cft_npz, tmp_path, capsys):
    """A folder holding seed 0's report and seed 1's resumable state is refused for seed 1."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["cft", "--npz", str(cft_npz), "--out", str(a), "--seed", "0", "--no-onnx", "--no-plot",
                 *CFT_OPTIONS]) == 0
    assert main(["cft", "--npz", str(cft_npz), "--out", str(b), "--seed", "1", "--no-onnx", "--no-plot",
                 *CFT_OPTIONS]) == 0
    shutil.rmtree(a / "cft_state")
    shutil.copytree(b / "cft_state", a / "cft_state")
    report = (a / "cft_report.json").read_bytes()
    capsys.readouterr()
    assert main(["cft", "--npz", str(cft_npz), "--out", str(a), "--seed", "1", "--no-onnx", "--no-plot",
                 *CFT_OPTIONS]) == 2
    err = capsys.readouterr().err
    assert "cft_report.json holds the results of another CFT run (seed: 0, now 1)" in err
    assert (a / "cft_report.json").read_bytes() == report
    # the same command again in its own folder resumes and is accepted
    assert main(["cft", "--npz", str(cft_npz), "--out", str(b), "--seed", "1", "--no-onnx", "--no-plot",
                 *CFT_OPTIONS]) == 0


# --- permissions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(tmp_path, umask):
    from labelwise.checkpoint import save_checkpoint
    from labelwise.plugins.cleannet.scorefile import write_scores
    from labelwise.utils.fileio import write_json

    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        save_checkpoint({"w": np.zeros(1)}, tmp_path / "c.pth")
        write_scores(tmp_path / "s.csv", ["a"], [0], [0.1], [1.0])
    finally:
        os.umask(old)
    for name in ("a.json", "c.pth", "s.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_replaced_file_keeps_its_mode(tmp_path):
    from labelwise.utils.fileio import write_json

    path = tmp_path / "a.json"
    write_json(path, {"x": 1})
    path.chmod(0o640)
    write_json(path, {"x": 2})
    assert path.stat().st_mode & 0o777 == 0o640


# --- stores, state and input files validated on read ----------------------------------------------


def _label_map_store(path, keys=("images/a.png", "images/b.png")):
    from labelwise.plugins.labelpool.store import LabelMapWriter

    writer = LabelMapWriter(path, keys=list(keys), num_classes=10, k=2, height=2, width=2, shard_size=8)
    scores = np.full((len(keys), 2, 2, 2), 0.25, dtype=np.float32)
    ids = np.zeros((len(keys), 2, 2, 2), dtype=np.int64)
    ids[:, 1] = 3
    writer.write_shard(0, scores, ids)
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["ids"].__setitem__((0, 0, 0), -1), r"holds class id -1; expected ids in \[0, 9\]"),
    (lambda r: r["ids"].__setitem__((1, 0, 0), 0), "lists the same class id twice at one location"),
    (lambda r: r["scores"].__setitem__((0, 1, 1), np.nan), "holds NaN or infinite scores"),
])
def test_label_map_store_records_are_checked_on_read(tmp_path, edit, message):
    from labelwise.errors import DataError
    from labelwise.plugins.labelpool.store import LabelMapStore

    path = _label_map_store(tmp_path / "maps")
    store = LabelMapStore(path)
    store.get("images/b.png")
    mm = np.memmap(path / "shard-00000.bin", dtype=store.dtype, mode="r+", shape=(2,))
    edit(mm[1])
    mm.flush()
    del mm
    store = LabelMapStore(path)
    store.get("images/a.png")  # the other record is intact
    with pytest.raises(DataError, match=r"the map of 'images/b.png' \(record 1\) " + message):
        store.get("images/b.png")


def test_label_map_store_index_listing_a_key_twice_is_refused(tmp_path):
    import json

    from labelwise.errors import DataError
    from labelwise.plugins.labelpool.store import LabelMapStore

    path = _label_map_store(tmp_path / "maps")
    index = json.loads((path / "labelmaps.json").read_text())
    index["keys"] = ["images/a.png", "images/a.png"]
    (path / "labelmaps.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="the key 'images/a.png' is listed twice"):
        LabelMapStore(path)


def test_refined_label_store_rows_are_checked_on_read(tmp_path):
    import torch

    from labelwise.errors import DataError
    from labelwise.plugins.refinery.store import RefinedLabelStore, write_refined_labels

    ids = ["images/a.png", "images/b.png"]
    probs = torch.softmax(torch.arange(20, dtype=torch.float32).reshape(2, 10), dim=1)
    path = write_refined_labels(tmp_path / "refined", ids, lambda rows: probs[rows], num_classes=10, k=3,
                                progress=False)
    store = RefinedLabelStore(path)
    assert store.soft_label("images/b.png").sum() == pytest.approx(1.0, abs=1e-3)
    for name, row, value, message in (("indices.npy", 1, -1, r"holds class index -1; expected \[0, 9\]"),
                                      ("indices.npy", 1, None, "lists the same class twice"),
                                      ("values.npy", 1, np.nan, "holds NaN or infinite values"),
                                      ("values.npy", 1, 20.0, "values sum to .*, more than 1")):
        original = (path / name).read_bytes()
        arr = np.load(path / name)
        arr[row, 0] = arr[row, 1] if value is None else value
        np.save(path / name, arr)
        with pytest.raises(DataError, match=r"the label of 'images/b.png' \(row 1\) " + message):
            RefinedLabelStore(path).soft_label("images/b.png")
        RefinedLabelStore(path).soft_label("images/a.png")
        (path / name).write_bytes(original)
    (path / "ids.txt").write_text("images/a.png\nimages/a.png\n")
    with pytest.raises(DataError, match="id 'images/a.png' is listed twice"):
        RefinedLabelStore(path)


def test_edited_cft_state_row_is_refused_not_broadcast(cft_npz, tmp_path, capsys):
    import json

    out = tmp_path / "out"
    argv = ["cft", "--npz", str(cft_npz), "--out", str(out), "--no-onnx", "--no-plot", *CFT_OPTIONS]
    assert main(argv) == 0
    (out / "cft_report.json").unlink()  # as if stopped before the results were written
    state = sorted((out / "cft_state").glob("category*-ga.json"))[2]
    saved = json.loads(state.read_text())
    saved["row"] = saved["row"][:2]
    state.write_text(json.dumps(saved))
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{state.name}: row has shape (2,), expected (17,) (the weight row and the bias)" in err


def test_single_label_values_are_never_truncated(tiny_digits, tmp_path):
    import json

    from labelwise.data.writers import read_labels
    from labelwise.errors import DataError

    source = tiny_digits / "single" / "train.labels.json"
    data = json.loads(source.read_text())
    data["labels"][3] = 5.7
    path = tmp_path / "train.labels.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"labels: value 5.7 at row 3 is not a class id \(an integer\)"):
        read_labels(path)
    data["labels"][3] = 5.0  # an integral float is the class it names
    path.write_text(json.dumps(data))
    assert read_labels(path)[1].labels[3] == 5


def test_feature_files_complex_missing_keys_and_crafted_headers(tmp_path):
    from labelwise.labels import check_partial_labels

    from labelwise.errors import DataError
    from labelwise.plugins.cleannet.features import FORMAT, load_features

    base = dict(format=np.array(FORMAT), features=np.ones((2, 3), np.float32), ids=np.array(["a", "b"]),
                labels=np.array([0, 1]), meta=np.array("{}"))
    for changes, message in ((dict(features=np.ones((2, 3), np.complex64)), "features have dtype complex64"),
                             (dict(labels=np.array([0.5, 1.0])), "labels have dtype float64"),
                             (dict(labels=None), "missing array.s. labels")):
        arrays = {k: v for k, v in {**base, **changes}.items() if v is not None}
        np.savez(tmp_path / "f.npz", **arrays)
        with pytest.raises(DataError, match=message):
            load_features(tmp_path / "f.npz")
    with pytest.raises(DataError, match="train_labels: expected real numbers 1 / 0 / -1 / NaN, got complex dtype"):
        check_partial_labels(np.array([[1 + 1j, 0]]), name="train_labels")

    # a header declaring a 36 TiB array in a member of a few bytes
    import zipfile

    header = {"descr": "<f8", "fortran_order": False, "shape": (1 << 21, 1 << 21)}
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        with archive.open("features.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, header)
            member.write(b"\0" * 64)
    with pytest.raises(DataError, match=r"features: its header declares shape \(2097152, 2097152\) of float64 "
                                        r"\(35184372088832 bytes\) but the archive holds"):
        load_features(tmp_path / "huge.npz")


def test_annotation_files_split_like_mmpretrain_and_name_bad_bytes(tmp_path):
    from labelwise.errors import DataError
    from labelwise.plugins.labelpool.relabel import read_image_list

    (tmp_path / "ann.txt").write_text("my photos/a b.png 3\nc.png 1\nd.png\n")
    assert read_image_list(tmp_path, "ann.txt") == ["my photos/a b.png", "c.png", "d.png"]
    (tmp_path / "latin.txt").write_bytes("a.png 1\ncaf\xe9.png 2\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"annotation file .*latin.txt, line 2: byte 0xe9 is not UTF-8 text"):
        read_image_list(tmp_path, "latin.txt")


@pytest.mark.parametrize("argv, message", [
    (["--lr", "nan"], "lr must be a finite number >= 0, got nan"),
    (["--mutation-range", "inf"], "mutation_range must be a finite number >= 0, got inf"),
    (["--device", "cuda:0"], "--device cuda:0: "),
])
def test_cft_options_that_are_not_finite_or_not_here(cft_npz, tmp_path, capsys, argv, message):
    import torch

    if argv[0] == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["cft", "--npz", str(cft_npz), "--out", str(tmp_path / "o"), *CFT_OPTIONS, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labelwise cft: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cleannet_nan_threshold_and_options(cleannet_inputs, tmp_path, capsys):
    features, model = cleannet_inputs
    assert main(score_argv(str(model), str(features), str(tmp_path / "s.csv"), "--threshold", "nan")) == 2
    assert "threshold must be a finite number, got nan" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    from labelwise.errors import ConfigError
    from labelwise.plugins.cleannet.config import CleanNetConfig

    with pytest.raises(ConfigError, match="CleanNet option lr must be a finite number, got nan"):
        CleanNetConfig(lr=float("nan"))


def test_resource_errors_are_one_line(tmp_path, capsys):
    import errno

    from labelwise.cli import resource_error_message

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["data", "make", str(blocker / "digits")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"labelwise data: error: {blocker / 'digits'}: a file is where a folder is expected "
                           "(part of this path is a file); choose another path")
    # root ignores permissions, so the other messages are checked on the exceptions themselves
    assert resource_error_message(PermissionError(errno.EACCES, "Permission denied", "/srv/out")) == (
        "permission denied: /srv/out; choose a path you can read / write, or change its permissions")
    assert "no space left on the device writing /srv/out" in resource_error_message(
        OSError(errno.ENOSPC, "No space left on device", "/srv/out"))
    assert resource_error_message(MemoryError()).startswith("out of memory; an input may be far larger")


@pytest.mark.parametrize("loss", ["pu_loss", "partial_bce"])
@pytest.mark.parametrize("value", [0.5, 7.0])
def test_partial_label_losses_refuse_targets_outside_1_0_minus1(loss, value):
    import torch

    from labelwise.errors import DataError
    from labelwise.plugins.pumlc import loss as losses

    logits = torch.zeros(2, 3)
    targets = torch.tensor([[1.0, 0.0, -1.0], [float("nan"), 1.0, 0.0]])
    getattr(losses, loss)(logits, targets)  # 1 / 0 / -1 / NaN are fine
    targets[1, 2] = value
    with pytest.raises(DataError, match=f"{loss}: target value {value!r}; expected partial labels 1 / 0 / -1"):
        getattr(losses, loss)(logits, targets)


def test_weighted_cross_entropy_refuses_negative_weights_and_bad_soft_targets():
    import torch

    from labelwise.errors import DataError
    from labelwise.plugins.cleannet.weighting import weighted_cross_entropy

    logits = torch.zeros(2, 3)
    with pytest.raises(DataError, match="sample weight -1.0; expected finite weights >= 0"):
        weighted_cross_entropy(logits, torch.tensor([0, 1]), torch.tensor([1.0, -1.0]))
    with pytest.raises(DataError, match="soft target row 1 sums to 20"):
        weighted_cross_entropy(logits, torch.tensor([[1.0, 0, 0], [20.0, 0, 0]]), torch.ones(2))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("references"), "CleanNet model file without references"),
    (lambda c: c.update(threshold="0.1"), "threshold is a str, expected float"),
    (lambda c: c.update(feature_dim=7), r"references \(\d+, \d+, \d+\) do not fit feature_dim 7|weights do not fit"),
    (lambda c: c.update(threshold=float("nan")), "threshold or references hold NaN"),
    (lambda c: c["config"].update(norm="zscore"), "config norm 'zscore'"),
])
def test_crafted_cleannet_model_files_are_one_line(cleannet_inputs, tmp_path, capsys, edit, message):
    import re

    from labelwise.checkpoint import load_checkpoint, save_checkpoint

    features, model = cleannet_inputs
    ckpt = load_checkpoint(model)
    edit(ckpt)
    crafted = tmp_path / "cleannet.pth"
    save_checkpoint(ckpt, crafted)
    assert main(score_argv(str(crafted), str(features), str(tmp_path / "s.csv"))) == 2
    err = capsys.readouterr().err
    assert err.startswith("labelwise cleannet: error: ") and "Traceback" not in err
    assert re.search(message, err), err


def test_cft_head_without_classes_is_refused(cft_npz, tmp_path, capsys):
    arrays = dict(np.load(cft_npz))
    arrays["weight"], arrays["bias"] = arrays["weight"][:0], arrays["bias"][:0]
    arrays["train_labels"], arrays["val_labels"] = arrays["train_labels"][:, :0], arrays["val_labels"][:, :0]
    np.savez(tmp_path / "empty.npz", **arrays)
    assert main(["cft", "--npz", str(tmp_path / "empty.npz"), "--out", str(tmp_path / "o"), *CFT_OPTIONS]) == 2
    err = capsys.readouterr().err
    assert "empty.npz: weight: shape (0, 16); expected a final layer of at least 1 class" in err
    assert not (tmp_path / "o" / "cft_report.json").exists()


def test_finished_write_removes_temporaries_of_killed_writers(tmp_path):
    import subprocess
    import sys

    from labelwise.utils.fileio import write_json

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f".a.json.{gone}.k3j2.tmp"  # left by a writer that was killed
    live = tmp_path / f".a.json.{os.getppid()}.x9.tmp"  # a concurrent writer still running
    other = tmp_path / f".b.json.{gone}.q1.tmp"  # another file's temporary
    for p in (stale, live, other):
        p.write_text("partial")
    write_json(tmp_path / "a.json", {"x": 1})
    assert not stale.exists() and live.exists() and other.exists()
