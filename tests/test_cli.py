import json
from pathlib import Path

import pytest

from conftest import run_python
import labelwise
from labelwise.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("plugins", "data", "train", "demo"):
        assert command in out
    assert "labelwise COMMAND --help" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: labelwise" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["data", "make", "{root}", "--p", "1.5"], "p must be in [0, 1], got 1.5"),
    (["data", "make", "{root}", "--r", "-0.2"], "r must be in [0, 1], got -0.2"),
    (["data", "make", "{root}", "--regimes", "single,fuzzy"], "unknown regime 'fuzzy'"),
    (["data", "make", "{root}", "--noise", "gaussian"], "unknown noise kind 'gaussian'"),
    (["train", "--data-root", "{root}/missing", "--regime", "single", "--work-dir", "{root}/w"],
     "dataset root {root}/missing does not exist"),
])
def test_bad_input_gives_one_line_error_without_traceback(tmp_path, capsys, argv, message):
    argv = [a.format(root=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(root=tmp_path) in err
    assert "Traceback" not in err
    assert err.startswith(f"labelwise {argv[0]}: error: ")


def test_debug_flag_shows_traceback(tmp_path):
    proc = run_python("-m", "labelwise", "--debug", "data", "make", str(tmp_path / "d"), "--p", "2", check=False)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_train_unknown_regime_and_existing_run(tiny_digits, tmp_path, capsys):
    assert main(["train", "--data-root", str(tiny_digits), "--regime", "noisy-gaussian-r0.2",
                 "--work-dir", str(tmp_path)]) == 2
    assert "regime 'noisy-gaussian-r0.2' is not in" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text("{}")
    assert main(["train", "--framework", "timm", "--data-root", str(tiny_digits), "--regime", "single",
                 "--work-dir", str(tmp_path)]) == 2
    assert "metrics.json exists" in capsys.readouterr().err


def test_unknown_labelwise_type_in_config_names_it(tiny_digits, tmp_path):
    cfg = tmp_path / "bad.py"
    base = Path(labelwise.__file__).parent / "configs" / "baseline" / "digits_single.py"
    cfg.write_text(f"_base_ = ['{base}']\nmodel = dict(head=dict(loss=dict(type='labelwise.NoSuchLoss')))\n")
    proc = run_python("-m", "labelwise", "train", "--data-root", str(tiny_digits), "--regime", "single",
                      "--work-dir", str(tmp_path / "w"), "--config", str(cfg), "--epochs", "1", check=False)
    assert proc.returncode == 2
    assert f"labelwise train: error: {cfg}: labelwise.NoSuchLoss is not in the mmpretrain::model registry" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_data_make_then_plugins_json(tmp_path):
    proc = run_python("-m", "labelwise", "data", "make", str(tmp_path / "d"), "--num-train", "20",
                      "--num-val", "10", "--num-test", "10", "--regimes", "single", "--no-progress")
    assert "digit scenes written to" in proc.stdout
    manifest = json.loads((tmp_path / "d" / "labelwise-data.json").read_text())
    assert manifest["regime_dirs"] == ["single"]
