"""Each rewrite against its reference module: fp32 parity, fp16 safety, unchanged state-dict keys."""

import pytest
import torch

from edgeseg.models.efficientvit import LiteMLA, UpSampleLayer
from edgeseg.models.efficientvit.rewrites import LiteMLAFp32Normaliser, UpSampleFp32
from edgeseg.models.registry import create_model
from edgeseg.rewrite import REWRITES, DeployWrapper, apply_rewrites


def _mla(dim=16, channels=64):
    torch.manual_seed(0)
    mla = LiteMLA(channels, channels, dim=dim).eval()
    for p in mla.parameters():  # non-trivial BN statistics
        p.data.normal_(0, 0.2)
    return mla


@pytest.mark.parametrize("hw", [(12, 15), (3, 4)])  # linear branch (180 tokens > dim) and quadratic (12 <= 16)
def test_attention_rewrite_matches_reference_fp32(hw):
    ref = _mla()
    new = LiteMLAFp32Normaliser(ref)
    x = torch.randn(2, 64, *hw)
    with torch.no_grad():
        a, b = ref(x), new(x)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


@pytest.mark.parametrize("hw", [(12, 15), (3, 4)])
def test_batched_bmm_attention_matches_reference_and_has_no_4d_matmul(hw):
    from edgeseg.models.efficientvit.rewrites import LiteMLABatched

    ref = _mla()
    new = LiteMLABatched(ref)
    x = torch.randn(2, 64, *hw)
    with torch.no_grad():
        a, b = ref(x), new(x)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    assert list(new.state_dict()) == list(ref.state_dict())
    ops = {str(n.target) for n in torch.export.export(new, (x,)).run_decompositions().graph.nodes}
    assert "aten.bmm.default" in ops and not {"aten.expand.default", "aten.sum.dim_IntList"} & ops, ops


def test_attention_rewrite_has_no_pad_and_keeps_keys():
    ref = _mla()
    new = LiteMLAFp32Normaliser(ref)
    assert list(new.state_dict()) == list(ref.state_dict())
    graph = torch.export.export(new, (torch.randn(1, 64, 12, 15),)).graph_module.code
    assert "pad" not in graph and "clamp_min" in graph


def test_attention_rewrite_survives_fp16_where_reference_overflows():
    ref = _mla()
    # large activations: per-head token sums of v k^T exceed fp16's 65504
    x = 40 * torch.rand(1, 64, 32, 32)
    with torch.no_grad():
        gold = ref(x)
        ref16 = ref.half()(x.half()).float()
        new16 = LiteMLAFp32Normaliser(ref).half()(x.half()).float()
    assert not torch.isfinite(ref16).all()  # the hazard is real
    assert torch.isfinite(new16).all()
    assert (new16 - gold).abs().max() <= 2e-2 * gold.abs().max()


def test_upsample_rewrite_matches_reference_and_keeps_dtype():
    ref = UpSampleLayer(factor=4)
    new = UpSampleFp32(ref)
    x = torch.randn(1, 8, 6, 7)
    assert torch.equal(ref(x), new(x))
    assert new(x.half()).dtype == torch.float16
    bilinear = REWRITES["bicubic-to-bilinear"].replace(ref)
    assert torch.allclose(bilinear(x), torch.nn.functional.interpolate(x, scale_factor=4, mode="bilinear"))


def test_apply_rewrites_whole_model_parity_and_counts():
    model, _ = create_model("efficientvit-b0", "camvid")
    deploy, counts = apply_rewrites(model, ["attention-fp32-normaliser", "upsample-fp32"])
    assert counts == {"attention-fp32-normaliser": 4, "upsample-fp32": 2}
    assert list(deploy.state_dict()) == list(model.state_dict())
    assert any(isinstance(m, LiteMLA) for m in model.modules())  # the reference is untouched (a copy)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        a, b = model(x), deploy(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_half_precision_model_runs_strongly_typed():
    model, _ = create_model("efficientvit-b0", "camvid")
    deploy, _ = apply_rewrites(model, ["attention-fp32-normaliser", "upsample-fp32"])
    wrapped = DeployWrapper(deploy.half(), dtype=torch.float16)
    with torch.no_grad():
        y = wrapped(torch.randn(1, 3, 64, 96))
        labels = DeployWrapper(deploy, dtype=torch.float16, with_argmax=True)(torch.randn(1, 3, 64, 96))
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert labels.dtype == torch.int32 and labels.shape == (1, 64, 96)


@pytest.mark.parametrize("factor", [2, 4])
def test_bicubic_as_conv_equals_pytorch_bicubic(factor):
    from edgeseg.models.efficientvit.rewrites import BicubicAsConv

    ref = UpSampleLayer(factor=factor)
    new = BicubicAsConv(ref)
    x = torch.randn(1, 16, 12, 15) * 3
    a, b = ref(x), new(x)
    assert a.shape == b.shape and (a - b).abs().max() <= 1e-5 * a.abs().max()
    assert new(x.half()).dtype == torch.float16
    assert dict(new.state_dict()) == {}  # no new keys in the model's state dict


def test_bicubic_as_conv_graph_has_no_resize_and_stays_4d():
    from edgeseg.models.efficientvit.rewrites import BicubicAsConv

    new = BicubicAsConv(UpSampleLayer(factor=4)).eval()
    gm = torch.export.export(new, (torch.randn(1, 8, 6, 7),)).run_decompositions({}).graph_module
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert not any("upsample" in t or "pad" in t or "gather" in t for t in targets), targets
    ranks = [len(n.meta["val"].shape) for n in gm.graph.nodes if "val" in n.meta and hasattr(n.meta["val"], "shape")]
    assert max(ranks) == 4


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("shape", [(1, 32, 12, 15), (1, 5, 1, 7), (2, 3, 6, 2)])
def test_bicubic_as_matmul_equals_pytorch_bicubic(factor, shape):
    from edgeseg.models.efficientvit.rewrites import BicubicAsMatmul

    ref = UpSampleLayer(factor=factor)
    new = BicubicAsMatmul(ref)
    x = torch.randn(*shape) * 3
    x[..., 0, :] += 20  # large border rows/columns: the clamped taps must add up there
    x[..., -1] -= 20
    a, b = ref(x), new(x)
    assert a.shape == b.shape and (a - b).abs().max() <= 1e-5 * a.abs().max()
    assert new(x.half()).dtype == torch.float16
    assert dict(new.state_dict()) == {}


def test_bicubic_as_matmul_graph_is_two_matmuls_rank_4():
    from edgeseg.models.efficientvit.rewrites import BicubicAsMatmul

    new = BicubicAsMatmul(UpSampleLayer(factor=4)).eval()
    gm = torch.export.export(new, (torch.randn(1, 8, 6, 7),)).run_decompositions({}).graph_module
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert not any("upsample" in t or "pad" in t or "gather" in t or "cat" in t for t in targets), targets
    assert sum("matmul" in t or "mm" in t for t in targets) == 2, targets
    ranks = [len(n.meta["val"].shape) for n in gm.graph.nodes if "val" in n.meta and hasattr(n.meta["val"], "shape")]
    assert max(ranks) == 4


def test_model_with_exact_bicubic_matches_reference():
    model, _ = create_model("efficientvit-b1", "camvid")
    deploy, counts = apply_rewrites(model, ["attention-fp32-normaliser", "bicubic-as-conv"])
    assert counts == {"attention-fp32-normaliser": 7, "bicubic-as-conv": 2}  # b1: 3 + 4 blocks
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        a, b = model(x), deploy(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_hardswish_as_clamp_equals_hardswish():
    from edgeseg.rewrite.common import HardswishAsClamp

    x = torch.linspace(-8, 8, 4001).reshape(1, 1, 1, -1)
    assert torch.allclose(HardswishAsClamp()(x), torch.nn.Hardswish()(x), atol=1e-6)


def test_hardswish_as_clamp_int8_tflite_stays_nhwc(tmp_path):
    """With scalar constants PT2E made 0-D quantized inputs and litert-torch's layout pass ran the activation in
    NCHW between two TRANSPOSEs of the whole feature map; the 4-D constants keep conv -> activation -> conv NHWC."""
    pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    from edgeseg.backends.tflite.export import export_tflite
    from edgeseg.rewrite.common import HardswishAsClamp

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 1), HardswishAsClamp(), torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
    ).eval()
    x = torch.randn(1, 8, 16, 20)
    path = tmp_path / "hs.tflite"
    export_tflite(net, x, path, "int8", True, calib_inputs=[torch.randn(1, 8, 16, 20) for _ in range(2)])
    ops = [o["op_name"] for o in Interpreter(model_path=str(path))._get_ops_details()]  # before delegation
    assert "TRANSPOSE" not in ops and "HARD_SWISH" not in ops, ops
    assert ops.count("CONV_2D") + ops.count("DEPTHWISE_CONV_2D") == 2


# ---------------------------------------------------------------------------------------------------------------
# Registration: families as plugins, rewrites declaring the exports that want them (deploy_rewrites)
# ---------------------------------------------------------------------------------------------------------------

# What an export applied before families registered their rewrites, copied literally from commit 9500537:
# edgeseg/targets.py (_BASE, _TFLITE, the tflite-int8 extras), pipeline.UPSAMPLE_REWRITES / DEFAULT_UPSAMPLE, and
# each rewrite's families and pattern in the hand-written edgeseg/rewrite/__init__.py table.
_OLD_BASE = ("attention-fp32-normaliser", "csa-no-unfold", "rasa-split-kv", "sra-split-kv", "layernorm-fp32")
_OLD_TFLITE = _OLD_BASE + ("sra-single-head-batch2",)
# added since, for accelerator residency (docs/residency.md): the normaliser as a matmul in every ONNX, and the
# HardSwish / GELU forms ORT's NNAPI and Core ML EPs take in fp16 ONNX
_RESIDENCY_ONNX = ("attention-normaliser-matmul",)
_RESIDENCY_ONNX_FP16 = _RESIDENCY_ONNX + ("layernorm-matmul-fp32", "gelu-erfc-rational", "hardswish-as-clip")
_OLD_TARGET_REWRITES = {
    ("onnx", "fp32"): _OLD_BASE + _RESIDENCY_ONNX,
    ("onnx", "fp16"): _OLD_BASE + _RESIDENCY_ONNX_FP16,
    ("onnx", "int8"): _OLD_BASE + _RESIDENCY_ONNX,
    ("tflite", "fp32"): _OLD_TFLITE,
    ("tflite", "fp16"): _OLD_TFLITE,
    ("tflite", "int8"): _OLD_TFLITE + ("hardswish-as-clamp", "rasa-weights-per-use"),
    ("coreml", "fp32"): _OLD_BASE,
    ("coreml", "fp16"): _OLD_BASE,
    ("coreml", "int8"): _OLD_BASE,
    ("tensorrt", "fp32"): _OLD_BASE,
    ("tensorrt", "fp16"): _OLD_BASE,
    ("tensorrt", "int8"): _OLD_BASE,
}
_OLD_UPSAMPLE_REWRITES = {
    "matmul": "bicubic-as-matmul",
    "conv": "bicubic-as-conv",
    "resize": "upsample-fp32",
    "bilinear": "bicubic-to-bilinear",
}
_OLD_DEFAULT_UPSAMPLE = "matmul"
_EVIT, _TRANSFORMERS = ("efficientvit",), ("lvt", "segformer")
_OLD_FAMILIES = {  # rewrite -> the families it was for (empty: any)
    "attention-fp32-normaliser": _EVIT,
    "bicubic-as-conv": _EVIT,
    "bicubic-as-matmul": _EVIT,
    "upsample-fp32": _EVIT,
    "bicubic-to-bilinear": _EVIT,
    "hardswish-as-clamp": (),
    "csa-no-unfold": ("lvt",),
    "rasa-split-kv": ("lvt",),
    "rasa-weights-per-use": ("lvt",),
    "sra-split-kv": ("segformer",),
    "sra-single-head-batch2": ("segformer",),
    "layernorm-fp32": _TRANSFORMERS,
    "gelu-tanh": _TRANSFORMERS,
    "attention-normaliser-matmul": _EVIT,
    "hardswish-as-clip": (),
    "gelu-erfc-rational": _TRANSFORMERS,
    "layernorm-matmul-fp32": _TRANSFORMERS,
}
_OLD_MODEL_FAMILIES = {
    "efficientvit-b0": "efficientvit",
    "efficientvit-b1": "efficientvit",
    "efficientvit-b2": "efficientvit",
    "efficientvit-b3": "efficientvit",
    "efficientvit-l1": "efficientvit",
    "efficientvit-l2": "efficientvit",
    "lvt": "lvt",
    "segformer-b0": "segformer",
}


def _old_patterns() -> dict[str, type]:
    from edgeseg.models.lvt import CSA, RASA
    from edgeseg.models.segformer import SpatialReductionAttention

    return {
        "attention-fp32-normaliser": LiteMLA,
        "bicubic-as-conv": UpSampleLayer,
        "bicubic-as-matmul": UpSampleLayer,
        "upsample-fp32": UpSampleLayer,
        "bicubic-to-bilinear": UpSampleLayer,
        "hardswish-as-clamp": torch.nn.Hardswish,
        "csa-no-unfold": CSA,
        "rasa-split-kv": RASA,
        "rasa-weights-per-use": RASA,
        "sra-split-kv": SpatialReductionAttention,
        "sra-single-head-batch2": SpatialReductionAttention,
        "layernorm-fp32": torch.nn.LayerNorm,
        "gelu-tanh": torch.nn.GELU,
        "attention-normaliser-matmul": LiteMLA,
        "hardswish-as-clip": torch.nn.Hardswish,
        "gelu-erfc-rational": torch.nn.GELU,
        "layernorm-matmul-fp32": torch.nn.LayerNorm,
    }


def _old_names(model: str, fmt: str, precision: str, upsample: str) -> list[str]:
    """The old target_rewrites: the target's list plus the upsample rewrite, filtered by the model's family."""
    family = _OLD_MODEL_FAMILIES[model]
    names = _OLD_TARGET_REWRITES[fmt, precision] + (_OLD_UPSAMPLE_REWRITES[upsample],)
    return [n for n in names if not _OLD_FAMILIES[n] or family in _OLD_FAMILIES[n]]


def _effective(names: list[str]) -> tuple[str, ...]:
    """What apply_rewrites applies of ``names``: the last rewrite of each module pattern, in the order it counts
    them (each pattern where it first occurs)."""
    patterns = _old_patterns()
    chosen = {}
    for name in names:
        chosen[patterns[name]] = name
    return tuple(chosen.values())


def test_registered_models_and_rewrites_are_todays():
    from edgeseg.models import FAMILIES
    from edgeseg.models.registry import MODELS

    assert FAMILIES == ("efficientvit", "lvt", "segformer")
    assert {name: e.family for name, e in MODELS.items()} == _OLD_MODEL_FAMILIES
    assert list(MODELS) == list(_OLD_MODEL_FAMILIES)  # the order `edgeseg models` lists them in
    # rewrites added since, for formats the old lists did not have (ExecuTorch)
    since = {"attention-batched-bmm": (_EVIT, LiteMLA)}
    assert {name: r.families for name, r in REWRITES.items()} == {
        **_OLD_FAMILIES,
        **{n: f for n, (f, _) in since.items()},
    }
    assert {name: r.pattern for name, r in REWRITES.items()} == {
        **_old_patterns(),
        **{n: p for n, (_, p) in since.items()},
    }
    assert REWRITES["attention-batched-bmm"].formats == ("executorch",)


@pytest.mark.parametrize("model", list(_OLD_MODEL_FAMILIES))
def test_deploy_rewrites_equal_what_each_target_applied_before(model):
    """Every model x today's 12 targets x every --upsample choice: the same rewrites as the old per-target lists,
    filtered by family and reduced as apply_rewrites reduces them."""
    from edgeseg.errors import EdgesegError
    from edgeseg.models.registry import DEFAULT_UPSAMPLE, deploy_rewrites, upsample_choices

    has_choice = _OLD_MODEL_FAMILIES[model] == "efficientvit"
    assert DEFAULT_UPSAMPLE == _OLD_DEFAULT_UPSAMPLE
    assert upsample_choices(model) == (_OLD_UPSAMPLE_REWRITES if has_choice else {})
    for fmt, precision in _OLD_TARGET_REWRITES:
        for upsample in (None, *_OLD_UPSAMPLE_REWRITES):
            if not has_choice and upsample not in (None, _OLD_DEFAULT_UPSAMPLE):
                # the old export refused it (pipeline._check_upsample_applies), and so does this
                with pytest.raises(EdgesegError, match=f"--upsample {upsample} applies to .*drop --upsample"):
                    deploy_rewrites(model, fmt, precision, upsample)
                continue
            new = deploy_rewrites(model, fmt, precision, upsample)
            old = _effective(_old_names(model, fmt, precision, upsample or _OLD_DEFAULT_UPSAMPLE))
            assert set(new) == set(old), (model, fmt, precision, upsample)
            # and in the same order: an export's manifest lists its rewrites in this order
            assert new == old, (model, fmt, precision, upsample)
            assert len({REWRITES[n].pattern for n in new}) == len(new)  # one per pattern: nothing left to supersede


@pytest.mark.parametrize("model", ["efficientvit-b0", "lvt", "segformer-b0"])
def test_apply_rewrites_applies_the_old_lists_as_the_parity_test_reduces_them(model):
    """The reduction the parity test uses is apply_rewrites' own: on a model, the old lists swap exactly the
    rewrites deploy_rewrites names."""
    from edgeseg.models.registry import deploy_rewrites

    with torch.device("meta"):
        net = create_model(model, "camvid")[0]
    for fmt, precision in (("onnx", "fp16"), ("tflite", "fp32"), ("tflite", "int8")):
        _, old_counts = apply_rewrites(net, _old_names(model, fmt, precision, _OLD_DEFAULT_UPSAMPLE))
        _, new_counts = apply_rewrites(net, deploy_rewrites(model, fmt, precision))
        assert old_counts == new_counts and set(new_counts) == set(deploy_rewrites(model, fmt, precision))


def test_later_rewrites_of_a_pattern_supersede_earlier_ones_in_their_place():
    from edgeseg.models.registry import deploy_rewrites

    # the family's registration order (segformer declares layernorm-fp32 after its attention rewrites, although lvt
    # registered it first), a superseding rewrite in the place of the one it drops, any-family rewrites last
    assert deploy_rewrites("segformer-b0", "onnx", "fp32") == ("sra-split-kv", "layernorm-fp32")
    assert deploy_rewrites("segformer-b0", "tflite", "fp16") == ("sra-single-head-batch2", "layernorm-fp32")
    assert deploy_rewrites("lvt", "tflite", "fp32") == ("csa-no-unfold", "rasa-split-kv", "layernorm-fp32")
    assert deploy_rewrites("lvt", "tflite", "int8") == (
        "csa-no-unfold",
        "rasa-weights-per-use",
        "layernorm-fp32",
        "hardswish-as-clamp",
    )
    # the upsample rewrite comes last, as the old target_rewrites appended it
    assert deploy_rewrites("efficientvit-b1", "coreml", "fp16", "conv") == (
        "attention-fp32-normaliser",
        "bicubic-as-conv",
    )


def test_upsample_choices_and_their_errors():
    from edgeseg.errors import EdgesegError
    from edgeseg.models.registry import deploy_rewrites

    assert deploy_rewrites("efficientvit-b0", "onnx", "fp32")[-1] == "bicubic-as-matmul"  # the family's default
    assert deploy_rewrites("lvt", "onnx", "fp32") == deploy_rewrites("lvt", "onnx", "fp32", "matmul")  # ignored
    with pytest.raises(EdgesegError, match=r"unknown --upsample 'cubic' for efficientvit-b0: use matmul, conv, "):
        deploy_rewrites("efficientvit-b0", "onnx", "fp32", "cubic")
    with pytest.raises(EdgesegError, match=r"unknown --upsample 'cubic': use matmul, conv, resize, bilinear"):
        deploy_rewrites("lvt", "onnx", "fp32", "cubic")
    with pytest.raises(
        EdgesegError,
        match=r"^--upsample resize applies to the head upsampling of efficientvit models; segformer-b0's head has "
        r"no upsampling choice: drop --upsample$",
    ):
        deploy_rewrites("segformer-b0", "tflite", "int8", "resize")
    with pytest.raises(EdgesegError, match="unknown model 'lvt-b0'"):
        deploy_rewrites("lvt-b0", "onnx", "fp32")


def test_rewrites_declare_the_exports_that_want_them():
    assert REWRITES["hardswish-as-clamp"].families == ()  # family-agnostic
    assert (REWRITES["hardswish-as-clamp"].formats, REWRITES["hardswish-as-clamp"].precisions) == (
        ("tflite",),
        ("int8",),
    )
    assert REWRITES["sra-single-head-batch2"].wants("tflite", "fp16")
    assert not REWRITES["rasa-weights-per-use"].wants("tflite", "fp16")
    # None: every format, including one a backend plugin adds later
    assert REWRITES["layernorm-fp32"].wants("webgpu", "fp16") and REWRITES["layernorm-fp32"].formats is None
    assert [n for n, r in REWRITES.items() if not r.default] == [
        "bicubic-as-conv",
        "upsample-fp32",
        "bicubic-to-bilinear",
        "gelu-tanh",
    ]
    assert {r.upsample: n for n, r in REWRITES.items() if r.upsample} == _OLD_UPSAMPLE_REWRITES


@pytest.fixture
def scratch_registries():
    """MODELS and REWRITES as they are, restored after the test (which registers a plugin family)."""
    import copy

    import edgeseg.rewrite
    from edgeseg.models.registry import MODELS

    saved = dict(MODELS), dict(REWRITES), copy.deepcopy(edgeseg.rewrite._FAMILY_ORDER)
    yield
    MODELS.clear()
    MODELS.update(saved[0])
    REWRITES.clear()
    REWRITES.update(saved[1])
    edgeseg.rewrite._FAMILY_ORDER.clear()
    edgeseg.rewrite._FAMILY_ORDER.update(saved[2])


def test_a_new_family_registers_its_models_and_rewrites(scratch_registries):
    from edgeseg.models.registry import MODELS, ModelEntry, deploy_rewrites, register_model, upsample_choices
    from edgeseg.rewrite import Rewrite, common, register_rewrite

    toy = register_model(ModelEntry("toy", "toy", ("camvid",), lambda dataset, n: torch.nn.Conv2d(3, n, 1)))
    relu = Rewrite("toy-relu", torch.nn.ReLU, torch.nn.ReLU6, "test", ("toy",), formats=("coreml",))
    register_rewrite(relu)
    register_rewrite(common.LAYERNORM_FP32.for_family("toy"))  # the family declares a shared rewrite
    assert MODELS["toy"] is toy and REWRITES["layernorm-fp32"].families == ("lvt", "segformer", "toy")
    assert deploy_rewrites("toy", "coreml", "fp32") == ("toy-relu", "layernorm-fp32")  # toy's registration order
    assert deploy_rewrites("toy", "tflite", "int8") == ("layernorm-fp32", "hardswish-as-clamp")
    assert deploy_rewrites("lvt", "coreml", "fp32") == deploy_rewrites("lvt", "onnx", "fp32")  # not for lvt
    assert upsample_choices("toy") == {}
    # a family's own rewrite of a pattern outranks the one for any family, wherever it was registered
    register_rewrite(Rewrite("toy-hardswish", torch.nn.Hardswish, torch.nn.ReLU6, "test", ("toy",)))
    assert deploy_rewrites("toy", "tflite", "int8") == ("layernorm-fp32", "toy-hardswish")
    assert deploy_rewrites("efficientvit-b0", "tflite", "int8")[1] == "hardswish-as-clamp"
    with pytest.raises(ValueError, match="model 'toy' is registered already"):
        register_model(toy)
    with pytest.raises(ValueError, match="rewrite 'toy-relu' is registered already"):
        register_rewrite(Rewrite("toy-relu", torch.nn.ReLU, torch.nn.ReLU6, "other", ("toy",)))
    with pytest.raises(ValueError, match="rewrite 'hardswish-as-clamp' is registered already"):
        register_rewrite(common.HARDSWISH_AS_CLAMP.for_family("toy"))  # already for any family
    with pytest.raises(ValueError, match="formats must be a tuple of strings"):
        register_rewrite(Rewrite("toy-gelu", torch.nn.GELU, torch.nn.GELU, "test", ("toy",), formats="tflite"))


def test_the_rewrite_framework_and_the_registry_know_no_family():
    import re
    import subprocess
    import sys
    from pathlib import Path

    import edgeseg.models.registry
    import edgeseg.rewrite

    framework = Path(edgeseg.rewrite.__file__).read_text()
    assert not re.search("efficientvit|lvt|segformer", framework, re.IGNORECASE)
    imports = r"^\s*(from|import) edgeseg\.models"
    assert not re.search(imports, framework, re.MULTILINE)
    registry = Path(edgeseg.models.registry.__file__).read_text()
    assert not re.search(imports, registry, re.MULTILINE)
    code = "import sys, edgeseg.rewrite; print(sorted(m for m in sys.modules if m.startswith('edgeseg.models')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
