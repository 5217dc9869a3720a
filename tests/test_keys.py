"""One rule names an image in every per-image store (labelwise.utils.keys)."""
import os

from labelwise.utils.keys import find_trailing, image_key


def test_image_key_is_the_posix_path_relative_to_the_root():
    assert image_key("/data/digits/images/train/000042.png", "/data/digits") == "images/train/000042.png"
    assert image_key("/data/digits/./images/x.png", "/data/digits/") == "images/x.png"  # normalised first
    assert image_key("data/digits/images/x.png", "data/digits") == "images/x.png"
    # not under the root, or no root: the path itself, for find_trailing
    assert image_key("/elsewhere/images/x.png", "/data/digits") == "/elsewhere/images/x.png"
    assert image_key("/data/digits-2/x.png", "/data/digits") == "/data/digits-2/x.png"  # a sibling is not inside
    assert image_key("images/x.png") == "images/x.png"
    assert image_key(os.path.join("a", "b.png"), None) == "a/b.png"


def test_find_trailing_takes_the_longest_trailing_key():
    keys = {"train/000042.png": 1, "000042.png": 2, "val/000042.png": 3}
    assert find_trailing("/data/digits/train/000042.png", keys) == 1  # the most specific key wins
    assert find_trailing("/data/digits/test/000042.png", keys) == 2
    assert find_trailing("/data/val/000042.png", keys, max_parts=2) == 3
    assert find_trailing("/data/val/000042.png", keys, max_parts=1) == 2  # keys of one part only
    assert find_trailing("/data/digits/train/000043.png", keys) is None
