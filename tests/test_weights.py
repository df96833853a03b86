"""The shipped-weights registry: hash check, fp16 publishing round trip."""

import json

import pytest
import torch

from edgeseg.errors import EdgesegError
from edgeseg.models import weights as W
from edgeseg.models.registry import create_model


@pytest.fixture()
def index(tmp_path):
    model, _ = create_model("efficientvit-b0", "camvid")
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "best.pt")
    idx = tmp_path / "weights" / "index.json"
    W.publish(tmp_path / "best.pt", "efficientvit-b0", "camvid", {"dataset": "camvid", "epochs": 3}, idx)
    return idx, model


def test_publish_writes_fp16_with_hash_and_loads_back(index):
    idx, model = index
    rec = json.loads(idx.read_text())["efficientvit-b0"]["camvid"]
    src = W.resolve_weights("efficientvit-b0", "camvid", idx)
    assert src.sha256 == rec["sha256"] and src.record["epochs"] == 3
    state = torch.load(src.path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    fresh, _ = create_model("efficientvit-b0", "camvid")
    W.load_weights(fresh, src)
    ref = model.state_dict()
    for k, v in fresh.state_dict().items():
        assert v.dtype == ref[k].dtype
        assert torch.allclose(v, ref[k].half().to(ref[k].dtype))


def test_tampered_weights_fail_the_hash_check(index):
    idx, _ = index
    path = idx.parent / "efficientvit-b0-camvid.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EdgesegError, match="corrupt: sha256"):
        W.resolve_weights("efficientvit-b0", "camvid", idx)


def test_unknown_tag_lists_known_tags(index):
    idx, _ = index
    with pytest.raises(EdgesegError, match=r"unknown weights 'imagenet'.*\(camvid\)"):
        W.resolve_weights("efficientvit-b0", "imagenet", idx)
