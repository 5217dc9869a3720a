import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """CleanNet's tiny networks run fastest on one thread (and do not fight other jobs for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def scores_csv(tiny_digits, tmp_path):
    """A score file for the tiny digits' noisy-symmetric-r0.2 train split: scores -0.5 .. 0.9 in
    sample order, weights hard at 0.2. Returns ``(path, train split, scores)``."""
    from labelwise.data import load_regime
    from labelwise.plugins.cleannet.scorefile import write_scores

    train = load_regime(tiny_digits, "noisy-symmetric-r0.2", "train")
    scores = np.linspace(-0.5, 0.9, len(train.ids))
    path = tmp_path / "scores.csv"
    write_scores(path, train.ids, train.labels, scores, (scores >= 0.2).astype(float))
    return path, train, scores
