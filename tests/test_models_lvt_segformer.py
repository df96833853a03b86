"""LVT and SegFormer-B0: official key names, parameter counts, deploy rewrites (parity at 1e-5 in fp32, rank <= 4,
no unfold/fold, fp32 attention core and LayerNorm in half precision) and exports that lint clean.

Small sizes and random weights keep it fast; the measured per-target table is in the README."""

from pathlib import Path

import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg import pipeline
from edgeseg.errors import EdgesegError
from edgeseg.lint import lint_onnx
from edgeseg.models.lvt import CSA, RASA, DilatedSharedDWConv
from edgeseg.models.registry import MODELS, count_macs, count_params, create_model
from edgeseg.models.segformer import SpatialReductionAttention
from edgeseg.rewrite import REWRITES, apply_rewrites, rewrites_for
from edgeseg.rewrite.lvt import CSADeploy, RASADeploy
from edgeseg.rewrite.segformer import GeluTanh, LayerNormFp32, SRADeploy, softmax_attention_fp32
from edgeseg.targets import TARGETS

DATA = Path(__file__).parent / "data"
TOL = 1e-5


def _expected_keys(file: str) -> dict[str, tuple[int, ...]]:
    expected = {}
    for line in (DATA / file).read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            expected[key] = tuple(int(s) for s in shape.split(",")) if shape else ()
    return expected


def _meta_model(name, dataset):
    with torch.device("meta"):
        return create_model(name, dataset)[0]


@pytest.mark.parametrize(
    "name,file", [("lvt", "lvt_ade20k_keys.txt"), ("segformer-b0", "segformer_b0_ade20k_keys.txt")]
)
def test_state_dict_keys_and_shapes_are_the_official_ones(name, file):
    expected = _expected_keys(file)
    state = {k: tuple(v.shape) for k, v in _meta_model(name, "ade20k").state_dict().items()}
    # both ways: an official checkpoint loads strictly, and nothing of ours is missing from it
    assert sorted(set(expected) - set(state)) == []
    assert sorted(set(state) - set(expected)) == []
    assert {k: (state[k], s) for k, s in expected.items() if state[k] != s} == {}


def test_parameter_counts_match_the_papers():
    lvt = _meta_model("lvt", "ade20k")
    backbone = sum(p.numel() for n, p in lvt.named_parameters() if n.startswith("backbone."))
    assert abs(backbone / 1e6 - 3.4) < 0.05  # LVT paper: 3.4M backbone
    assert abs(count_params(lvt) / 1e6 - 3.9) < 0.05  # with the ADE20K SegFormer head
    seg = count_params(_meta_model("segformer-b0", "ade20k")) / 1e6
    # 3.75M in the SegFormer table; the checkpoint also holds mmseg's unused conv_seg (128*150 + 150 = 19.4k)
    assert abs(seg - 3.75) < 0.03


def test_macs_match_the_papers_at_512():
    # GFLOPs in the papers' ADE20K tables are multiply-accumulates: LVT 10.6, SegFormer-B0 8.4
    assert abs(count_macs("lvt", "ade20k", (512, 512)) / 1e9 - 10.6) < 0.05
    assert abs(count_macs("segformer-b0", "ade20k", (512, 512)) / 1e9 - 8.4) < 0.05


def test_logits_at_stride_4_with_camvid_heads():
    for name in ("lvt", "segformer-b0"):
        model, spec = create_model(name, "camvid")
        with torch.no_grad():
            y = model.eval()(torch.randn(1, 3, 64, 96))
        assert spec.num_classes == 11 and y.shape == (1, 11, 16, 24) and model.output_stride == 4


# ---------------------------------------------------------------------------------------------------------------
# Rewrite parity against the reference modules (fp32, random weights, 1e-5)
# ---------------------------------------------------------------------------------------------------------------


def _max_diff(ref: nn.Module, new: nn.Module, *args) -> float:
    with torch.no_grad():
        return (ref.eval()(*args) - new.eval()(*args)).abs().max().item()


@pytest.mark.parametrize("hw", [(8, 12), (7, 9), (5, 6), (1, 3)])
def test_csa_without_unfold_fold_matches_reference(hw):
    torch.manual_seed(0)
    ref = CSA(32, 2)
    nn.init.normal_(ref.attn.weight, std=0.5)  # sharp attention, so a wrong offset order would show
    x = torch.randn(2, *hw, 32)
    assert _max_diff(ref, CSADeploy(ref), x) < TOL


@pytest.mark.parametrize("sr_ratio", [4, 1])
def test_rasa_split_kv_unrolled_matches_reference(sr_ratio):
    torch.manual_seed(0)
    ref = RASA(40, 5, sr_ratio)
    x = torch.randn(2, 8, 12, 40)
    assert _max_diff(ref, RASADeploy(ref), x) < TOL


@pytest.mark.parametrize("sr_ratio", [8, 1])
def test_sra_split_kv_matches_reference(sr_ratio):
    torch.manual_seed(0)
    ref = SpatialReductionAttention(32, 2, True, sr_ratio)
    nn.init.normal_(ref.kv.bias)  # the bias halves must follow the weight halves
    x = torch.randn(2, 16 * 24, 32)
    assert _max_diff(ref, SRADeploy(ref), x, 16, 24) < TOL


def test_layernorm_fp32_matches_reference():
    torch.manual_seed(0)
    ref = nn.LayerNorm(64, eps=1e-6)
    nn.init.normal_(ref.weight)
    nn.init.normal_(ref.bias)
    x = torch.randn(2, 10, 64) * 3
    assert _max_diff(ref, LayerNormFp32(ref), x) == 0.0


@pytest.mark.parametrize("name", ["lvt", "segformer-b0"])
def test_whole_model_with_every_target_rewrite_matches_reference(name):
    torch.manual_seed(0)
    model, _ = create_model(name, "camvid")
    names = rewrites_for(TARGETS["tflite-fp32"].rewrites, MODELS[name].family)
    deploy, counts = apply_rewrites(model.eval(), names)
    expected = (
        {"csa-no-unfold": 2, "rasa-split-kv": 6, "layernorm-fp32": 24}
        if name == "lvt"
        else {"sra-split-kv": 8, "layernorm-fp32": 30}
    )
    assert {k: v for k, v in counts.items() if v} == expected
    # no reference attention module is left, the replaced ones' LayerNorms included
    left = (CSA, RASA, SpatialReductionAttention, nn.LayerNorm)
    assert not [m for m in deploy.modules() if type(m) in left]
    assert deploy.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(1, 3, 64, 96)
    assert _max_diff(model, deploy, x) < TOL


def test_rewrites_are_chosen_per_model_family():
    base = TARGETS["onnx-fp32"].rewrites
    assert "csa-no-unfold" not in rewrites_for(base, "efficientvit")
    assert "attention-fp32-normaliser" not in rewrites_for(base, "lvt")
    assert set(rewrites_for(base, "segformer")) == {"sra-split-kv", "layernorm-fp32"}
    assert REWRITES["gelu-tanh"].fits("lvt") and "gelu-tanh" not in base  # exists, not applied by default


def test_gelu_tanh_error_is_what_the_docstring_says():
    x = torch.linspace(-8, 8, 200_001, dtype=torch.float64)
    err = (F.gelu(x) - GeluTanh()(x)).abs().max().item()
    assert 1e-4 < err < 4.8e-4


# ---------------------------------------------------------------------------------------------------------------
# Half precision: the attention core and LayerNorm stay fp32
# ---------------------------------------------------------------------------------------------------------------


def test_fp32_softmax_core_survives_scores_beyond_fp16_range():
    torch.manual_seed(0)
    q = torch.randn(1, 1, 16, 8) * 120
    k_t = torch.randn(1, 1, 8, 16) * 120
    v = torch.randn(1, 1, 16, 8)
    exact = torch.softmax(q @ k_t, -1) @ v
    naive = torch.softmax((q.half() @ k_t.half()).float(), -1)  # fp16 scores overflow to inf -> nan rows
    assert not torch.isfinite(naive).all()
    out = softmax_attention_fp32(q.half(), k_t.half(), v.half(), 1.0)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert (out.float() - exact).abs().max().item() < 0.1


def test_layernorm_fp32_in_a_half_model_avoids_fp16_overflow():
    ref = nn.LayerNorm(64)
    x = torch.randn(1, 4, 64).half().float() * 400  # squares exceed 65504
    with torch.no_grad():
        exact = ref(x)
    island = LayerNormFp32(ref).half()  # as the model converted to fp16 (the parameters are shared)
    out = island(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert (out.float() - exact).abs().max().item() < 1e-2


# ---------------------------------------------------------------------------------------------------------------
# Graph shape: what the rewrites remove from the exported graph
# ---------------------------------------------------------------------------------------------------------------


def _onnx(module: nn.Module, args: tuple, path: Path) -> onnx.ModelProto:
    torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=18, external_data=False)
    return onnx.load(str(path))


def test_csa_graph_has_no_col2im_and_rank_at_most_4(tmp_path):
    torch.manual_seed(0)
    ref = CSA(16, 2)
    x = torch.randn(1, 8, 8, 16)
    ref_graph = _onnx(ref, (x,), tmp_path / "ref.onnx")
    ref_report = lint_onnx(ref_graph, "onnx")
    # the reference really has what the rewrite removes (else this test could not fail)
    assert "Col2Im" in {n.op_type for n in ref_graph.graph.node} and ref_report.max_rank >= 5
    graph = _onnx(CSADeploy(ref), (x,), tmp_path / "deploy.onnx")
    ops = {n.op_type for n in graph.graph.node}
    assert not ops & {"Col2Im", "Gather", "GatherND", "ConvTranspose"}
    report = lint_onnx(graph, "tflite")
    assert report.clean and report.max_rank <= 4


@pytest.mark.parametrize("which", ["rasa", "sra"])
def test_attention_graphs_have_rank_at_most_4(which, tmp_path):
    torch.manual_seed(0)
    if which == "rasa":
        ref, args = RASA(32, 2, 2), (torch.randn(1, 8, 8, 32),)
        new = RASADeploy(ref)
    else:
        ref, args = SpatialReductionAttention(32, 2, True, 2), (torch.randn(1, 64, 32), 8, 8)
        new = SRADeploy(ref)
    assert lint_onnx(_onnx(ref, args, tmp_path / "ref.onnx"), "onnx").max_rank == 5  # the fused kv permute
    report = lint_onnx(_onnx(new, args, tmp_path / "new.onnx"), "tflite")
    assert report.clean and report.max_rank <= 4


def test_dilated_query_conv_shares_one_kernel():
    ds = DilatedSharedDWConv(4)
    assert [n for n, _ in ds.named_parameters()] == ["weight"]
    x = torch.randn(1, 4, 9, 9)
    manual = sum(F.silu(F.conv2d(x, ds.weight, padding=d, dilation=d, groups=4)) for d in (1, 3, 5))
    assert torch.allclose(ds(x), manual)


# ---------------------------------------------------------------------------------------------------------------
# Export through the pipeline (small size; the full-size table is measured by benchmarks/export_table.py)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name in ("lvt", "segformer-b0"):
        torch.manual_seed(0)
        model, _ = create_model(name, "camvid")
        paths[name] = str(folder / f"{name}.pt")
        torch.save({"state_dict": model.state_dict()}, paths[name])
    return paths


@pytest.mark.parametrize("name", ["lvt", "segformer-b0"])
def test_onnx_export_parity_and_lint(name, random_weights, tmp_path):
    m = pipeline.export(name, "camvid", random_weights[name], "onnx-fp32", "64x96", tmp_path, parity_images=1)
    assert m["parity"]["max_abs_diff"] < 1e-4 and m["parity"]["argmax_agreement"] >= 0.999
    assert m["output"]["shape"] == [1, 11, 16, 24] and m["upsample"] == "reference (bilinear resize)"
    assert m["lint"]["clean"]
    graph = onnx.load(f"{m['folder']}/{m['file']}")
    report = lint_onnx(graph, "tflite")  # the strictest rule set: GPU-delegate rank 4
    assert report.clean and report.max_rank <= 4
    ops = {n.op_type for n in graph.graph.node}
    assert "LayerNormalization" in ops and not ops & {"Col2Im", "Shape", "Gather"}


def test_upsample_choice_is_refused_for_bilinear_heads(random_weights, tmp_path):
    with pytest.raises(EdgesegError, match="drop --upsample"):
        pipeline.export(
            "lvt", "camvid", random_weights["lvt"], "onnx-fp32", "64x96", tmp_path, parity_images=1, upsample="resize"
        )
    assert list(tmp_path.iterdir()) == []
