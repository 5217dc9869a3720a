from conftest import run_python


def test_demo_tiny_end_to_end_and_resume(tmp_path):
    out = tmp_path / "demo"
    proc = run_python("-m", "labelwise", "demo", "--tiny", "--out", str(out), timeout=900)
    assert "| mmpretrain | single | top1 (%) | 1 |" in proc.stdout
    assert "| mmpretrain | partial-p0.3 | mAP (%) | 1 |" in proc.stdout
    assert "| timm | single | top1 (%) | 1 |" in proc.stdout
    summary = (out / "summary.md").read_text()
    assert "## Baselines" in summary and "partial-p0.3" in summary
    assert len(list((out / "runs").glob("*/metrics.json"))) == 3
    # a second run resumes: nothing is trained again, the table is the same
    again = run_python("-m", "labelwise", "demo", "--tiny", "--out", str(out), timeout=300)
    assert again.stderr.count("reusing") == 3
    marker = "Baselines on the digit scenes"
    assert again.stdout[again.stdout.index(marker):] == proc.stdout[proc.stdout.index(marker):]
