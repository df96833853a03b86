"""The weights edgeseg ships: they load by name, their hash is checked, and `edgeseg eval` reproduces the val
mIoU recorded in the registry (to 0.05 points) on the shared CamVid."""

from pathlib import Path

import pytest

from edgeseg.commands import evaluate as evaluate_cmd
from edgeseg.commands import weights as weights_cmd
from edgeseg.models.weights import read_index, resolve_weights

SHIPPED = [(model, tag) for model, tags in read_index().items() for tag in tags]


def test_b0_camvid_weights_are_shipped():
    assert ("efficientvit-b0", "camvid") in SHIPPED


@pytest.mark.parametrize("model,tag", SHIPPED)
def test_shipped_weights_reproduce_recorded_val_miou(model, tag, camvid):
    record = resolve_weights(model, tag).record
    for key in ("command", "epochs", "val_miou", "sha256", "train_seconds", "hardware"):
        assert key in record, key
    report = evaluate_cmd.evaluate(model, record["dataset"], tag, camvid, split=record["val_split"])
    assert report["images"] == 101
    assert abs(100 * report["miou"] - 100 * record["val_miou"]) <= 0.05


def test_readme_weights_table_matches_the_registry():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert weights_cmd.shipped_weights_markdown() in readme, "regenerate with `edgeseg weights list --markdown`"
