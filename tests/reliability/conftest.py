"""Small inputs for the crash-recovery and determinism tests (built once per session)."""
import numpy as np
import pytest
import torch

from reliability.harness import run_inprocess

NOISY = "noisy-symmetric-r0.2"
#: CFT on 12 categories, ~0.2 s of GA each on one thread: long enough to kill mid-way.
CFT_OPTIONS = ["--epochs", "120", "--early-stopping", "0", "--population", "20", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="session")
def cft_npz(tmp_path_factory):
    from labelwise.plugins.cft.synthetic import make_synthetic_problem

    p = make_synthetic_problem(n_train=400, n_val=200, n_test=10, dim=16, num_classes=12, head_steps=30,
                               prevalence=(0.1, 0.4), seed=3)
    path = tmp_path_factory.mktemp("rel-cft") / "head.npz"
    keys = ("train_features", "train_labels", "val_features", "val_labels", "weight", "bias")
    np.savez(path, **{k: p[k] for k in keys})
    return path


@pytest.fixture(scope="session")
def annotator_ckpt(tmp_path_factory):
    """A narrow timm ResNet-18 (random weights, seed 0) for `labelwise relabel --timm-model`."""
    import timm

    from labelwise.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10, channels=(8, 16, 32, 64))
    path = tmp_path_factory.mktemp("rel-annotator") / "r18.pth"
    save_checkpoint({"state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def features_ckpt(tmp_path_factory):
    """A digit-scenes timm ResNet-18 (random weights, seed 0) for `labelwise cleannet features`."""
    from labelwise.adapters.timm import create_digits_model
    from labelwise.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_digits_model("resnet18", num_classes=10)  # the width `--framework timm` builds
    path = tmp_path_factory.mktemp("rel-features") / "digits-r18.pth"
    save_checkpoint({"state_dict": model.state_dict()}, path)
    return path


def relabel_argv(tiny_digits, ckpt, out, *extra):
    return ["relabel", out, "--data-root", tiny_digits, "--ann-file", "single/train.txt", "--timm-model",
            "resnet18", "--checkpoint", ckpt, "--model-kwargs", '{"channels": [8, 16, 32, 64]}',
            "--input-size", "96", "--topk", "3", "--batch-size", "8", "--shard-size", "8", "--no-progress", *extra]


def features_argv(tiny_digits, ckpt, out, *extra):
    return ["cleannet", "features", "--framework", "timm", "--model", "resnet18", "--checkpoint", ckpt,
            "--data-root", tiny_digits, "--ann-file", f"{NOISY}/train.txt", "--out", out, "--batch-size", "8",
            "--chunk-size", "16", "--no-progress", *extra]


def fit_argv(tiny_digits, features, work, *extra):
    return ["cleannet", "fit", "--features", features, "--verification", f"{tiny_digits}/{NOISY}/train.labels.json",
            "--k", "2", "--steps", "60", "--val-interval", "20", "--batch-verified", "4", "--batch-unverified", "4",
            "--work-dir", work, "--no-progress", *extra]


def score_argv(model, features, out, *extra):
    return ["cleannet", "score", "--model", model, "--features", features, "--out", out, *extra]


@pytest.fixture(scope="session")
def cleannet_inputs(tiny_digits, features_ckpt, tmp_path_factory):
    """``(features.npz, cleannet.pth)``: features of the noisy train split and a briefly fitted CleanNet."""
    root = tmp_path_factory.mktemp("rel-cleannet")
    assert run_inprocess(features_argv(tiny_digits, features_ckpt, root / "features.npz")) == 0
    assert run_inprocess(fit_argv(tiny_digits, root / "features.npz", root / "fit")) == 0
    return root / "features.npz", root / "fit" / "cleannet.pth"
