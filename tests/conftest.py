import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
CAMVID = Path(os.environ.get("EDGESEG_CAMVID", REPO.parent / "shared" / "data" / "camvid"))

# Tests run on 2 cores beside other work: keep torch from oversubscribing them.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def camvid() -> Path:
    if not (CAMVID / "train" / "images").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID} (set EDGESEG_CAMVID)")
    return CAMVID
