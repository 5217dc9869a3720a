"""The README's Python quick start runs as printed (on the tiny digit scenes, one epoch)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_block_after(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading):]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python block after {heading!r} in {README}"
    return match.group(1)


def test_timm_quick_start_trains_and_predicts(tiny_digits):
    code = _python_block_after("## timm and plain PyTorch")
    assert '"data/digits"' in code and "epochs=12" in code  # what the substitutions below rely on
    code = code.replace('"data/digits"', repr(str(tiny_digits))).replace("epochs=12", "epochs=1")
    namespace = {}
    exec(compile(code, f"{README}:timm quick start", "exec"), namespace)
    scores, targets = namespace["scores"], namespace["targets"]
    assert tuple(scores.shape) == (80, 10)  # tiny_digits: 80 test images, 10 classes
    assert len(targets) == 80
    assert namespace["model"].training is False  # predict() leaves the model in eval mode
