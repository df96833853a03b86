"""EfficientViT-Seg reference models: official key names, strict loading, params/MACs, attention numerics."""

from pathlib import Path

import pytest
import torch

from edgeseg.errors import EdgesegError
from edgeseg.models.efficientvit import LiteMLA
from edgeseg.models.registry import MODELS, count_macs, count_params, create_model, resolve_model_name
from edgeseg.models.weights import WeightsSource, load_state_dict_strict, load_weights

KEYS_FILE = Path(__file__).parent / "data" / "efficientvit_b1_cityscapes_keys.txt"

# The official table (EfficientViT-Seg README): params (M), GMACs (conv + matmul).
OFFICIAL = [
    ("efficientvit-b0", "cityscapes", (1024, 2048), 0.707, 4.39),
    ("efficientvit-b1", "cityscapes", (1024, 2048), 4.803, 25.11),
    ("efficientvit-b2", "cityscapes", (1024, 2048), 15.32, 73.64),
    ("efficientvit-b3", "cityscapes", (1024, 2048), 39.60, 179.2),
    ("efficientvit-l1", "cityscapes", (1024, 2048), 40.24, 282.5),
    ("efficientvit-l2", "cityscapes", (1024, 2048), 52.61, 396.1),
    ("efficientvit-b1", "ade20k", (512, 512), 4.79, 3.09),
    ("efficientvit-b2", "ade20k", (512, 512), 15.29, 9.08),
    ("efficientvit-b3", "ade20k", (512, 512), 39.55, 22.17),
    ("efficientvit-l1", "ade20k", (512, 512), 40.41, 36.34),
    ("efficientvit-l2", "ade20k", (512, 512), 51.46, 45.18),
]


def _meta_model(name, dataset):
    with torch.device("meta"):
        return create_model(name, dataset)[0]


@pytest.mark.parametrize("name,dataset,size,params_m,gmacs", OFFICIAL)
def test_params_and_macs_match_official_table(name, dataset, size, params_m, gmacs):
    params = count_params(_meta_model(name, dataset)) / 1e6
    macs = count_macs(name, dataset, size) / 1e9
    # the table rounds to its printed digits
    assert abs(params - params_m) <= 0.006, params
    assert abs(macs - gmacs) / gmacs < 0.003, macs


def test_b1_keys_and_shapes_follow_official_naming():
    expected = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            expected[key] = tuple(int(s) for s in shape.split(",")) if shape else ()
    state = _meta_model("efficientvit-b1", "cityscapes").state_dict()
    missing = [k for k in expected if k not in state]
    assert not missing, missing
    wrong = {k: (tuple(state[k].shape), s) for k, s in expected.items() if tuple(state[k].shape) != s}
    assert not wrong, wrong
    # fewer_norm blocks have biases instead of BatchNorm on their first two convs
    assert "backbone.stages.2.op_list.0.main.inverted_conv.norm.weight" not in state
    # LiteMLA's qkv conv has neither bias nor norm in the official model
    assert not any(k.startswith("backbone.stages.3.op_list.1.context_module.main.qkv.norm") for k in state)
    assert "backbone.stages.3.op_list.1.context_module.main.qkv.conv.bias" not in state


def test_norm_eps_follows_official_zoo():
    b0 = _meta_model("efficientvit-b0", "cityscapes")
    l1 = _meta_model("efficientvit-l1", "cityscapes")
    assert {m.eps for m in b0.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}
    assert {m.eps for m in l1.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-7}


def test_l_series_uses_tanh_gelu():
    l1 = _meta_model("efficientvit-l1", "ade20k")
    gelus = [m for m in l1.modules() if isinstance(m, torch.nn.GELU)]
    assert gelus and all(g.approximate == "tanh" for g in gelus)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_head_round_trips_strictly(name):
    for dataset in MODELS[name].datasets:
        src, _ = create_model(name, dataset)
        dst, _ = create_model(name, dataset)
        state = {k: v + 1 if v.is_floating_point() else v for k, v in src.state_dict().items()}
        load_state_dict_strict(dst, state, "memory")
        assert all(torch.equal(state[k], v) for k, v in dst.state_dict().items())


def test_official_checkpoint_file_layouts_load(tmp_path):
    model, _ = create_model("efficientvit-b0", "cityscapes")
    state = model.state_dict()
    for i, obj in enumerate(
        [{"state_dict": state}, state, {"model": state}, {"module." + k: v for k, v in state.items()}]
    ):
        path = tmp_path / f"ckpt{i}.pt"
        torch.save(obj, path)
        fresh, _ = create_model("efficientvit-b0", "cityscapes")
        load_weights(fresh, WeightsSource(path, None, None, None))


def test_mismatched_state_dict_names_offending_keys():
    model, _ = create_model("efficientvit-b0", "camvid")
    state = model.state_dict()
    state["head.extra.weight"] = torch.zeros(1)
    del state["backbone.input_stem.op_list.0.conv.weight"]
    state["head.output_ops.0.op_list.1.conv.bias"] = torch.zeros(19)
    with pytest.raises(EdgesegError) as info:
        load_state_dict_strict(model, state, "x.pt")
    msg = str(info.value)
    assert "missing keys: backbone.input_stem.op_list.0.conv.weight" in msg
    assert "unexpected keys: head.extra.weight" in msg
    assert "head.output_ops.0.op_list.1.conv.bias (19,) vs model (11,)" in msg


def test_logits_at_stride_8_and_camvid_head_is_cityscapes_head_with_11_classes():
    model, spec = create_model("efficientvit-b0", "camvid")
    assert spec.num_classes == 11
    with torch.no_grad():
        y = model(torch.randn(1, 3, 96, 128))
    assert y.shape == (1, 11, 12, 16)
    city = create_model("efficientvit-b0", "cityscapes")[0].state_dict()
    camvid = model.state_dict()
    diff = [k for k in city if city[k].shape != camvid[k].shape]
    assert diff == ["head.output_ops.0.op_list.1.conv.weight", "head.output_ops.0.op_list.1.conv.bias"]


def test_model_names_resolve():
    assert resolve_model_name("efficientvit-b1-camvid", None) == ("efficientvit-b1", "camvid")
    assert resolve_model_name("efficientvit-b1", "ade20k") == ("efficientvit-b1", "ade20k")
    with pytest.raises(EdgesegError, match="no ade20k head"):
        resolve_model_name("efficientvit-b0", "ade20k")
    with pytest.raises(EdgesegError, match="Did you mean 'efficientvit-b1'"):
        resolve_model_name("efficientvit-b11", None)


def _reference_linear_attention(q, k, v, eps):
    """Direct formula: out_n = sum_m v_m (k_m . q_n) / (sum_m k_m . q_n + eps), per head."""
    scores = torch.einsum("bhdm,bhdn->bhmn", k, q)  # (b, h, m, n)
    num = torch.einsum("bhem,bhmn->bhen", v, scores)
    den = scores.sum(dim=2, keepdim=True)
    return num / (den + eps)


def test_lite_mla_linear_branch_matches_direct_formula():
    torch.manual_seed(0)
    mla = LiteMLA(32, 32, dim=8).eval()
    qkv = torch.randn(2, 2 * 3 * 32, 6, 5, dtype=torch.float64)  # 2 scales (1 + aggreg) x 3 x (4 heads x 8)
    mla = mla.double()
    out = mla.relu_linear_att(qkv)
    b, _, h, w = qkv.shape
    t = qkv.reshape(b, -1, 24, h * w)
    q, k, v = t[:, :, :8].relu(), t[:, :, 8:16].relu(), t[:, :, 16:]
    ref = _reference_linear_attention(q, k, v, mla.eps).reshape(b, -1, h, w)
    assert torch.allclose(out, ref, atol=1e-10)


def test_lite_mla_quadratic_branch_used_for_few_tokens_and_agrees_with_linear():
    torch.manual_seed(0)
    mla = LiteMLA(32, 32, dim=16).double().eval()
    x = torch.randn(1, 32, 3, 4, dtype=torch.float64)  # 12 tokens <= dim 16: quadratic branch
    qkv = torch.cat([mla.qkv(x)] + [op(mla.qkv(x)) for op in mla.aggreg], 1)
    assert torch.allclose(mla.relu_quadratic_att(qkv), mla.relu_linear_att(qkv), atol=1e-9)
    calls = []
    mla.relu_quadratic_att = lambda t: calls.append("quadratic") or LiteMLA.relu_quadratic_att(mla, t)
    mla(x)
    assert calls == ["quadratic"]


def test_lite_mla_zero_query_gives_zero_not_nan():
    # eps keeps 0/0 finite: with all-negative q (ReLU -> 0) both numerator and normaliser are 0
    mla = LiteMLA(16, 16, dim=8).eval()
    qkv = torch.randn(1, 2 * 48, 4, 4)
    qkv.view(1, -1, 24, 16)[:, :, :8] = -1.0
    out = mla.relu_linear_att(qkv)
    assert torch.isfinite(out).all() and out.abs().max() == 0
