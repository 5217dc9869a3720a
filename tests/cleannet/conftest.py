import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """CleanNet's tiny networks run fastest on one thread (and do not fight other jobs for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
