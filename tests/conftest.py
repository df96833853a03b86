import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
CAMVID = Path(os.environ.get("EDGESEG_CAMVID", REPO.parent / "shared" / "data" / "camvid"))

# Tests run on 2 cores beside other work: keep torch from oversubscribing them.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _forget_user_models():
    """User models a test registers (``--model PATH.py:NAME``) leave the registry afterwards: other tests list
    ``MODELS`` and expect edgeseg's own."""
    from edgeseg.models import registry

    models, specs = dict(registry.MODELS), dict(registry._USER_SPECS)
    yield
    registry.MODELS.clear()
    registry.MODELS.update(models)
    registry._USER_SPECS.clear()
    registry._USER_SPECS.update(specs)


@pytest.fixture(scope="session")
def camvid() -> Path:
    if not (CAMVID / "train" / "images").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID} (set EDGESEG_CAMVID)")
    return CAMVID


@pytest.fixture(scope="session")
def random_b0_weights(tmp_path_factory) -> str:
    """An untrained EfficientViT-B0 CamVid state dict in the official file layout ({"state_dict": ...})."""
    from edgeseg.models.registry import create_model

    torch.manual_seed(0)
    model, _ = create_model("efficientvit-b0", "camvid")
    path = tmp_path_factory.mktemp("weights") / "b0-random.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return str(path)
