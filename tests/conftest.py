"""Every test starts from a seeded global RNG and one CPU thread.

Seeding makes draws that do not pass their own generator reproducible; one thread
avoids oversubscribing small CI machines, where two threads on tiny matrices were
measured up to 50x slower.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def seeded_single_thread():
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hand_net():
    """A two-layer net worked by hand: W_1 = I_2, w_2 = e_1, one input e_1 with label +1."""
    w1 = torch.eye(2, dtype=torch.float64)
    w2 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1.0], dtype=torch.float64)
    return [w1, w2], x, y
