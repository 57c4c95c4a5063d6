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
