"""OpenVINO int8: NNCF post-training quantization under edgeseg's attention-aware policy and mIoU budget.

* Calibration: edgeseg's class-balanced sampler (``Int8Request.calib``), fed to ``nncf.quantize`` as-is.
* Policy: the ops edgeseg keeps float everywhere (``edgeseg.quantize.policy.ALWAYS_FLOAT``: attention MatMuls,
  Softmax, the normaliser's Divide / ReduceSum, LayerNorm, the logits' Interpolate) become NNCF ignored *types*;
  activations are asymmetric (NNCF's MIXED preset), weights symmetric per output channel.
* Constant-first MatMul: a MatMul whose first input is a Constant (EfficientViT's bicubic-as-matmul head, ``U @ x``)
  quantized by NNCF gives an IR the CPU plugin refuses to compile (``Check 'any_of(scale.size(), OC, 1U)' failed
  at dnnl_postops_composer.cpp``: the per-channel weight scale lands on the wrong axis). Those MatMuls are found
  by pattern and ignored by *name*, whatever a policy says about MatMul.
* Budget: edgeseg's mixed-precision search (``edgeseg.quantize.search.search_float_layers``, held-out scorer of
  ``Int8Request``) over the Convolution layers. NNCF calibrates once (its statistics cannot be cached for
  quantize: a probe that re-ran it would cost a full calibration pass each, minutes at 384x480); a probe is that
  one quantized model with the probed layers made float again (their activation FakeQuantize bypassed, their
  original fp32 weights restored; NNCF's bias correction stays). The layers the search keeps float are then
  quantized for real (``nncf.quantize`` with them ignored), and that model is scored and kept. And NNCF's own
  ``quantize_with_accuracy_control`` on the same budget and held-out images. Both are scored with edgeseg's
  runtime settings; the better (within budget first, then more int8 layers, then higher mIoU) is kept and both
  are recorded.
"""

from __future__ import annotations

import logging
import time

from edgeseg.quantize.policy import Int8Policy

# edgeseg's float vocabulary (ONNX op names) -> the OpenVINO op types they become in the IR
OV_TYPES = {
    "MatMul": ("MatMul",),
    "Softmax": ("Softmax", "SoftMax"),
    "Div": ("Divide",),
    "ReduceSum": ("ReduceSum",),
    "LayerNormalization": ("MVN",),
    "Resize": ("Interpolate",),
    "ArgMax": ("TopK",),
}
LAYER_TYPES = ("Convolution", "GroupConvolution")
# what lies between a constant and its consumer when the input is folded or dequantized (Constant(i8) -> Convert ->
# Subtract -> Multiply is NNCF's compressed weight; Convert alone an fp16 IR's decompression)
_CONSTANT_PATH = ("Convert", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Multiply", "Subtract", "FakeQuantize")

OPENVINO_INT8_POLICY = Int8Policy(
    "openvino",
    ("Conv",),
    False,
    "uint8",
    note="NNCF PTQ (MIXED preset: asymmetric activations); attention core, normaliser and head upsampling float "
    "(NNCF ignored types); constant-first MatMuls ignored by name (the CPU plugin cannot compile them in int8)",
)
# edgeseg's --calib-method -> NNCF's activation range estimator (NNCF has no 99.999 % percentile: MEAN_QUANTILE
# averages each calibration image's 0.01 % / 99.99 % quantiles)
NNCF_RANGES = {"percentile": "MEAN_QUANTILE", "minmax": "MINMAX"}


def _constant_nodes(output) -> list | None:
    """The nodes of ``output``'s producer subtree when it is computed from constants only, else None."""
    node = output.get_node()
    if node.get_type_name() == "Constant":
        return [node]
    if node.get_type_name() not in _CONSTANT_PATH:
        return None
    nodes = [node]
    for i in range(node.get_input_size()):
        sub = _constant_nodes(node.input_value(i))
        if sub is None:
            return None
        nodes += sub
    return nodes


def constant_first_matmuls(model, quantized_only: bool = False) -> list[str]:
    """Friendly names of the MatMuls whose first input is a constant (``U @ x``); ``quantized_only``: those whose
    constant is int8 (NNCF's compressed weight) or fake-quantized, which the CPU plugin cannot compile."""
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        nodes = _constant_nodes(op.input_value(0))
        if nodes is None:
            continue
        quantized = any(
            n.get_type_name() == "FakeQuantize"
            or (n.get_type_name() == "Constant" and n.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4"))
            for n in nodes
        )
        if quantized or not quantized_only:
            out.append(op.get_friendly_name())
    return out


def float_types(policy: Int8Policy) -> list[str]:
    return sorted({t for op in policy.float_op_types() for t in OV_TYPES.get(op, ())})


def ignored_scope(model, policy: Int8Policy, keep_float: list[str] = ()):
    import nncf

    names = sorted({*constant_first_matmuls(model), *keep_float})
    return nncf.IgnoredScope(names=names, types=float_types(policy), validate=False)


def layers(model) -> list[tuple[str, str]]:
    """(name, label) of each Convolution layer: the units the mixed-precision search keeps float."""
    return [
        (op.get_friendly_name(), op.get_type_name())
        for op in model.get_ordered_ops()
        if op.get_type_name() in LAYER_TYPES
    ]


def int8_nodes(model) -> dict[str, int]:
    """Per op type, the Convolution layers whose activation input is fake-quantized (what runs int8)."""
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in LAYER_TYPES and op.input_value(0).get_node().get_type_name() == "FakeQuantize":
            counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return counts


def int8_layers(model) -> int:
    return sum(int8_nodes(model).values())


def refloat(quantized, fp32, keep_float: list[str]):
    """A copy of NNCF-quantized ``quantized`` in which the ``keep_float`` layers run in float again: the
    FakeQuantize on their activation input is bypassed and their weights are the ``fp32`` model's originals."""
    from openvino import opset13 as opset

    if not keep_float:
        return quantized
    q = quantized.clone()
    keep = set(keep_float)
    originals = {op.get_friendly_name(): op for op in fp32.get_ordered_ops() if op.get_friendly_name() in keep}
    for op in q.get_ordered_ops():
        name = op.get_friendly_name()
        if name not in keep or name not in originals:
            continue
        act = op.input_value(0)
        if act.get_node().get_type_name() == "FakeQuantize":
            op.input(0).replace_source_output(act.get_node().input_value(0))
        original = originals[name].input_value(1).get_node()
        if original.get_type_name() == "Constant" and _constant_nodes(op.input_value(1)) is not None:
            op.input(1).replace_source_output(opset.constant(original.get_data().copy()).output(0))
    q.validate_nodes_and_infer_types()
    return q


def _advanced(method: str):
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ranges = getattr(RangeEstimatorParametersSet, NNCF_RANGES.get(method, "MINMAX"))
    return AdvancedQuantizationParameters(activations_range_estimator_params=ranges)


def _quiet():
    logging.getLogger("nncf").setLevel(logging.ERROR)  # its INFO lines name every ignored node


def quantize(model, calib_arrays: list, policy: Int8Policy, method: str, keep_float: list[str] = ()):
    """``nncf.quantize`` of (a clone of) ``model`` with the policy's ignored scope and ``keep_float`` layers float."""
    import nncf

    _quiet()
    return nncf.quantize(
        model.clone(),
        nncf.Dataset(calib_arrays),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(calib_arrays),
        ignored_scope=ignored_scope(model, policy, keep_float),
        advanced_parameters=_advanced(method),
    )


def nncf_settings(model, policy: Int8Policy, method: str, calib_images: int) -> dict:
    return {
        "tool": f"nncf {_nncf_version()}",
        "preset": "MIXED",
        "activation_ranges": NNCF_RANGES.get(method, "MINMAX"),
        "calibration_images": calib_images,
        "ignored_types": float_types(policy),
        "constant_first_matmuls_float": constant_first_matmuls(model),
    }


def _nncf_version() -> str:
    from importlib.metadata import version

    return version("nncf")


def quantize_openvino(model, job, policy: Int8Policy, runner_of) -> tuple[object, dict]:
    """The int8 OpenVINO model of fp32 ``model`` for ``job`` (calibration and budget in ``job.int8``), and the
    manifest's quantization facts. ``runner_of(model)`` compiles a model with edgeseg's runtime settings."""
    from edgeseg.quantize.search import search_float_layers

    req = job.int8
    calib = [x.numpy() for x in req.calib.inputs(job.size)]
    facts = {"policy": policy.as_dict(), "nncf": nncf_settings(model, policy, req.calib.method, len(calib))}
    if req.max_miou_drop is None:
        q = quantize(model, calib, policy, req.calib.method)
        facts["int8_layers"] = int8_layers(q)
        facts["int8_nodes"] = int8_nodes(q)
        facts["mixed_precision"] = None
        return q, facts
    say = req.progress or (lambda _: None)
    scorer = req.holdout_scorer(runner_of(model), job.size)
    say("calibrating once (NNCF statistics collection)")
    quantized_all = quantize(model, calib, policy, req.calib.method)

    def measure(keep: list[str], images: int | None) -> tuple[float, float]:
        return scorer.score(runner_of(refloat(quantized_all, model, keep)), images)

    t0 = time.perf_counter()
    result = search_float_layers(
        layers(model), measure, scorer.miou_reference, len(scorer.inputs), req.max_miou_drop, say, 4
    )
    result.seconds = round(time.perf_counter() - t0, 1)
    if result.nodes_to_exclude:
        say(f"quantizing with {len(result.nodes_to_exclude)} layer(s) kept float")
        ours = quantize(model, calib, policy, req.calib.method, result.nodes_to_exclude)
    else:
        ours = quantized_all
    result.miou_final = scorer.score(runner_of(ours))[0]
    edgeseg_side = {
        **result.as_dict(),
        "within_budget": result.drop_final <= req.max_miou_drop,
        "int8_layers": int8_layers(ours),
        "probes_scored_on": "one NNCF calibration with the probed layers re-floated (fp32 weights, no activation "
        "FakeQuantize); the final model is quantized by NNCF with the kept layers ignored and scored itself",
    }
    say("NNCF quantize_with_accuracy_control on the same budget")
    theirs, nncf_side = _accuracy_control(model, calib, policy, req, scorer, runner_of)
    candidates = [("edgeseg search", ours, edgeseg_side)]
    if theirs is not None:
        candidates.append(("nncf quantize_with_accuracy_control", theirs, nncf_side))
    kept = max(
        candidates,
        key=lambda c: (c[2].get("within_budget", False), c[2].get("int8_layers", 0), c[2].get("miou_final", 0.0)),
    )
    facts.update(
        {
            "mixed_precision": edgeseg_side,
            "accuracy_control": nncf_side,
            "kept": kept[0],
            "kept_because": "within budget first, then more int8 Convolution layers, then higher held-out mIoU",
            "int8_layers": kept[2]["int8_layers"],
            "int8_nodes": int8_nodes(kept[1]),
        }
    )
    return kept[1], facts


def _accuracy_control(model, calib, policy, req, scorer, runner_of) -> tuple[object | None, dict]:
    """NNCF's ``quantize_with_accuracy_control``: its validation function is edgeseg's held-out mIoU (points)."""
    import nncf

    _quiet()

    def validate(compiled, _items) -> float:
        # NNCF compiles with its own (default) CPU settings; the kept candidate is re-scored with edgeseg's below
        request = compiled.create_infer_request()

        def run(x):
            import torch

            out = request.infer({0: x.numpy()})
            return torch.from_numpy(out[compiled.output(0)].copy())

        return scorer.score(run)[0]

    t0 = time.perf_counter()
    try:
        q = nncf.quantize_with_accuracy_control(
            model.clone(),
            nncf.Dataset(calib),
            nncf.Dataset([x.numpy() for x in scorer.inputs]),
            validate,
            max_drop=req.max_miou_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(calib),
            ignored_scope=ignored_scope(model, policy),
            advanced_quantization_parameters=_advanced(req.calib.method),
        )
    except Exception as exc:  # NNCF raises many kinds; the edgeseg search result still stands
        return None, {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
    miou = scorer.score(runner_of(q))[0]
    drop = scorer.miou_reference - miou
    return q, {
        "budget": req.max_miou_drop,
        "miou_fp32": scorer.miou_reference,
        "miou_final": miou,
        "drop_final": round(drop, 3),
        "within_budget": drop <= req.max_miou_drop,
        "int8_layers": int8_layers(q),
        "layers": len(layers(model)),
        "seconds": round(time.perf_counter() - t0, 1),
        "scored_on": "the same held-out images, re-scored with edgeseg's runtime settings",
    }
