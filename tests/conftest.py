import os

import pytest
import torch

# One intra-op thread: on the shared 2-core CI machine, 2 threads made small-op tests up to 100x slower (oversubscription
# with the other test processes and subprocesses).
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
