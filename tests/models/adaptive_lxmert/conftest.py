import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Adaptive LXMERT's tests run tiny models on a shared CPU: one thread is faster than thread hand-offs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
