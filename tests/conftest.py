import numpy as np
import pytest
import torch

# The test networks are small: one torch thread is several times faster than two, and
# never oversubscribes the two cores of CI.
torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
