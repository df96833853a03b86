import json
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


@pytest.fixture
def export_manifest():
    """``run(model, target, out, *options)``: ``edgeseg export`` through the CLI with 2 parity images; the export
    must succeed; returns the artifact's manifest."""

    def run(model, target: str, out: Path, *options) -> dict:
        from typer.testing import CliRunner

        from edgeseg.cli import app

        args = ["export", "--model", str(model), "--target", target, "--out", str(out), "--parity-images", "2"]
        r = CliRunner().invoke(app, args + [str(o) for o in options])
        assert r.exit_code == 0, r.output
        (manifest,) = Path(out).glob("*/manifest.json")
        return json.loads(manifest.read_text())

    return run


@pytest.fixture(scope="session")
def camvid() -> Path:
    if not (CAMVID / "train" / "images").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID} (set EDGESEG_CAMVID)")
    return CAMVID


@pytest.fixture
def tiny_train_config(camvid):
    """``make(out, **overrides)``: a TrainConfig for a short B0 run on CamVid, two 64x64 crops of two images
    per epoch, scored on one image after every epoch."""
    from edgeseg.train.trainer import TrainConfig

    def make(out, **overrides):
        base = dict(
            model="efficientvit-b0",
            dataset="camvid",
            data=str(camvid),
            out=str(out),
            epochs=1,
            batch_size=2,
            crop=(64, 64),
            limit_train=2,
            limit_val=1,
            eval_every=1,
        )
        return TrainConfig(**{**base, **overrides})

    return make


@pytest.fixture(scope="session")
def random_b0_weights(tmp_path_factory) -> str:
    """An untrained EfficientViT-B0 CamVid state dict in the official file layout ({"state_dict": ...})."""
    from edgeseg.models.registry import create_model

    torch.manual_seed(0)
    model, _ = create_model("efficientvit-b0", "camvid")
    path = tmp_path_factory.mktemp("weights") / "b0-random.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return str(path)
