import pytest

NUM_CLASSES = 10


@pytest.fixture(scope="session")
def single_train_maps(tiny_digits, tmp_path_factory):
    """A store of random top-3 2x2 maps for every image of tiny_digits' single/train split."""
    from conftest import write_random_label_maps

    return write_random_label_maps(tiny_digits, tmp_path_factory.mktemp("labelmaps") / "single-train",
                                   num_classes=NUM_CLASSES)
