"""Mixed-precision search: the fewest layers left in float so that INT8 stays within an mIoU budget.

1. Calibrate once (ranges cached), quantize everything the backend policy allows, and measure the mIoU drop
   against the fp32 graph on a held-out slice of the calibration split (images never calibrated on).
2. Within budget: done, nothing stays float. Otherwise a sensitivity analysis quantizes one layer at a time and
   measures the logit SNR (and mIoU drop) it alone costs; layers are ranked most sensitive first.
3. The smallest k such that leaving the k most sensitive layers in float meets the budget: k = 1, 2, 4, ... until
   it holds, then bisection between the last two (each probe is a real quantize + held-out evaluation).

Logit SNR ranks the layers because one layer alone rarely moves a 16-image mIoU by more than its noise; the
budget itself is checked on mIoU, the quantity users care about.

The objective (``HoldoutScorer(objective=...)``): ``mean`` judges the budget on the mIoU drop; ``worst-class`` on
the largest drop of any one class's IoU (quantization error gathers on thin classes such as pole and sign, which
the mean hides). With ``worst-class`` the scorer's figure is the reference mIoU minus that largest class drop, so
"reference - figure" is the worst class's drop and the search below runs unchanged; ``SearchResult.objective``
records which figure the budget was judged on. ``agreement`` needs no trained weights and no meaningful labels:
the figure is the percentage of pixels whose argmax matches the fp32 model's (the reference scores 100), so the
budget is in points of disagreement, for a model whose classes are not the calibration set's (your own model
before training, or one trained on other data).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from edgeseg.data.transforms import auto_fit, fit_input, logits_to_source, to_tensor
from edgeseg.eval.metrics import ConfusionMatrix
from edgeseg.quantize.onnx_int8 import quantizable_layers, quantize_prepared
from edgeseg.quantize.policy import Int8Policy
from edgeseg.quantize.pt2e import Pt2eSwitches

Predictor = Callable[[torch.Tensor], torch.Tensor]
# images the PT2E per-layer sensitivity is scored on: 4 at 384x480 are 0.9 M logits for the SNR ranking, and a
# quarter of the 32-image slice's time for B1's 258 probes (the manifest records sensitivity_seconds)
PT2E_SENSITIVITY_IMAGES = 4
OBJECTIVES = ("mean", "worst-class", "agreement")


class HoldoutScorer:
    """mIoU of a candidate on held-out labelled images, and its logit SNR against the fp32 reference, whose
    outputs are computed once."""

    def __init__(
        self,
        reference: Predictor,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        size: tuple[int, int],
        num_classes: int,
        ignore_index: int | None,
        objective: str = "mean",
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown INT8 search objective {objective!r}: use {', '.join(OBJECTIVES)}")
        self.objective = objective
        self.fits = [auto_fit(im.shape[:2], size) for im in images]
        self.inputs = [fit_input(to_tensor(im), fit) for im, fit in zip(images, self.fits)]
        self.labels = [torch.from_numpy(lb) for lb in labels]
        self.num_classes, self.ignore_index = num_classes, ignore_index
        with torch.inference_mode():
            self.reference = [reference(x).float() for x in self.inputs]
        self.objective = "mean"  # the reference's own figures are plain mIoU and per-class IoU
        self.miou_reference = self._miou(self.reference)
        self.iou_reference = self._ious(self.reference)
        self.objective = objective
        if objective == "agreement":
            self.miou_reference = 100.0  # the reference agrees with itself everywhere

    def _ious(self, outputs: list[torch.Tensor]) -> list[float | None]:
        cm = ConfusionMatrix(self.num_classes, self.ignore_index)
        for out, fit, target in zip(outputs, self.fits, self.labels):  # zip: the first len(outputs) images
            cm.update(logits_to_source(out, fit).argmax(1), target)
        return cm.result().iou

    def _agreement(self, outputs: list[torch.Tensor]) -> float:
        same = total = 0
        for out, ref, fit in zip(outputs, self.reference, self.fits):
            a, b = logits_to_source(out, fit).argmax(1), logits_to_source(ref, fit).argmax(1)
            same += int((a == b).sum())
            total += a.numel()
        return 100.0 * same / max(total, 1)

    def _miou(self, outputs: list[torch.Tensor]) -> float:
        if self.objective == "agreement":
            return self._agreement(outputs)
        ious = self._ious(outputs)
        if self.objective == "worst-class":
            whole = len(outputs) >= len(self.reference)
            reference = self.iou_reference if whole else self._ious(self.reference[: len(outputs)])
            drops = [r - (c or 0.0) for r, c in zip(reference, ious) if r is not None]
            return self.miou_reference - 100.0 * max(drops, default=0.0)
        present = [v for v in ious if v is not None]
        return 100.0 * float(np.mean(present)) if present else 0.0

    def score(self, candidate: Predictor, images: int | None = None) -> tuple[float, float]:
        """(mIoU in points, logit SNR in dB vs the reference), on the first ``images`` held-out images or all."""
        with torch.inference_mode():
            outs = [candidate(x).float() for x in self.inputs[:images]]
        sig = sum(float((r.double() ** 2).sum()) for r in self.reference[: len(outs)])
        noise = sum(float(((o.double() - r.double()) ** 2).sum()) for o, r in zip(outs, self.reference))
        return self._miou(outs), (math.inf if noise == 0 else 10 * math.log10(sig / noise))


def fewest_float_layers(
    ranked: Sequence[str], drop_of: Callable[[list[str]], float], budget: float
) -> tuple[int, dict[int, float]]:
    """Smallest k with ``drop_of(ranked[:k]) <= budget`` (k = 0 first, then 1, 2, 4, ... and bisection), and every
    measured drop by k. Assumes more float layers never cost more mIoU, which holds up to measurement noise; the
    returned k was itself measured. When even every layer float is over budget (the graph's int8 input and output
    remain), that is k = len(ranked), the best there is; the caller reports it over budget."""
    drops: dict[int, float] = {}

    def ok(k: int) -> bool:
        if k not in drops:
            drops[k] = drop_of(list(ranked[:k]))
        return drops[k] <= budget

    if ok(0):
        return 0, drops
    lo, hi = 0, 1  # lo fails, hi unknown
    while hi < len(ranked) and not ok(hi):
        lo, hi = hi, min(2 * hi, len(ranked))
    if hi >= len(ranked):
        hi = len(ranked)
        if not ok(hi):
            return hi, drops
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, drops


@dataclass
class LayerSensitivity:
    node: str
    layer: str
    snr_db: float  # logits vs fp32 with only this layer in int8
    miou_drop: float  # points, the same


@dataclass
class SearchResult:
    budget: float
    holdout_images: int
    miou_fp32: float
    miou_int8_all: float
    miou_final: float
    float_layers: list[dict] = field(default_factory=list)  # node, layer, snr_db, miou_drop, why
    sensitivity: list[LayerSensitivity] | None = None  # most sensitive first; None when not needed
    sensitivity_images: int | None = None  # held-out images the sensitivity was scored on (None: all)
    sensitivity_seconds: float = 0.0
    probes: dict[int, float] = field(default_factory=dict)  # k float layers -> measured drop
    seconds: float = 0.0
    # "worst-class": drops are the largest per-class IoU drop; "agreement": points of argmax disagreement with fp32
    objective: str = "mean"

    @property
    def drop_final(self) -> float:
        return self.miou_fp32 - self.miou_final

    @property
    def nodes_to_exclude(self) -> list[str]:
        return [f["node"] for f in self.float_layers]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["drop_all_int8"] = round(self.miou_fp32 - self.miou_int8_all, 3)
        d["drop_final"] = round(self.drop_final, 3)
        d["probes"] = {str(k): round(v, 3) for k, v in self.probes.items()}
        d["held_out"] = "calibration split images not used for calibration (class-balanced)"
        if self.objective == "worst-class":
            d["objective_note"] = (
                "drops are the largest per-class IoU drop vs fp32; miou_final and miou_int8_all are the fp32 mIoU "
                "minus that drop, not mIoUs"
            )
        if self.objective == "agreement":
            d["objective_note"] = (
                "figures are the % of held-out pixels whose argmax equals the fp32 model's (fp32: 100); drops are "
                "points of disagreement, not mIoU"
            )
        return d


def search_float_layers(
    layers: Sequence[tuple[str, str]],
    measure: Callable[[list[str], int | None], tuple[float, float]],
    miou_reference: float,
    holdout_images: int,
    budget: float,
    say: Callable[[str], None],
    sensitivity_images: int | None = None,
) -> SearchResult:
    """Steps 1-3 of the module docstring over ``layers`` ((id, label) pairs): ``measure(ids kept float, images)``
    quantizes the rest and returns (mIoU, logit SNR) on the first ``images`` held-out images (None: all); the
    per-layer sensitivity uses ``sensitivity_images`` of them, the budget probes all. The caller writes the final
    artifact for ``result.nodes_to_exclude`` and sets ``miou_final`` from it."""
    say("quantizing every layer the policy allows")
    miou_all, _ = measure([], None)
    result = SearchResult(budget, holdout_images, miou_reference, miou_all, miou_all)
    result.probes[0] = miou_reference - miou_all
    if result.probes[0] <= budget:
        return result
    label = dict(layers)
    names = [n for n, _ in layers]
    sens = []
    # a layer's mIoU drop alone is against the reference on the same images
    t0 = time.perf_counter()
    base = miou_reference if sensitivity_images is None else measure(names, sensitivity_images)[0]
    for i, node in enumerate(names):
        say(f"sensitivity {i + 1}/{len(names)}: {label[node]}")
        miou, snr = measure([n for n in names if n != node], sensitivity_images)
        sens.append(LayerSensitivity(node, label[node], round(snr, 2), round(base - miou, 3)))
    sens.sort(key=lambda s: (s.snr_db, -s.miou_drop))
    result.sensitivity, result.sensitivity_images = sens, sensitivity_images
    result.sensitivity_seconds = round(time.perf_counter() - t0, 1)

    def drop_of(exclude: list[str]) -> float:
        say(f"probing {len(exclude)} layer(s) in float")
        return miou_reference - measure(exclude, None)[0]

    k, drops = fewest_float_layers([s.node for s in sens], drop_of, budget)
    result.probes.update(drops)
    fewer = max(j for j in drops if j < k)  # the largest probe that failed
    why = f"with {fewer} float layer(s) the held-out drop was {drops[fewer]:.2f} > {budget} mIoU"
    if drops[k] > budget:
        why = f"even with every layer float the held-out drop is {drops[k]:.2f} > {budget} mIoU"
    result.float_layers = [
        {**asdict(s), "why": f"sensitivity rank {r + 1} of {len(sens)} ({s.snr_db} dB alone in int8); {why}"}
        for r, s in enumerate(sens[:k])
    ]
    return result


def search_onnx(
    prepared: Path,
    out_path: Path,
    calib_inputs: list[torch.Tensor],
    policy: Int8Policy,
    method: str,
    scorer: HoldoutScorer,
    load: Callable[[Path], Predictor],
    budget: float,
    progress: Callable[[str], None] | None = None,
) -> SearchResult:
    """Quantize ``prepared`` into ``out_path`` with the fewest layers in float that keep the held-out mIoU drop
    within ``budget`` points; return what was measured."""
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    layers = quantizable_layers(onnx.load(str(prepared), load_external_data=False), policy)
    with tempfile.TemporaryDirectory(prefix="edgeseg-search-") as tmp:
        cache = Path(tmp) / "calibration.json"
        probe = Path(tmp) / "probe.onnx"

        def measure(exclude: list[str], images: int | None) -> tuple[float, float]:
            quantize_prepared(prepared, probe, calib_inputs, policy, method, exclude, cache)
            return scorer.score(load(probe), images)

        result = search_float_layers(layers, measure, scorer.miou_reference, len(scorer.inputs), budget, say)
        result.objective = getattr(scorer, "objective", "mean")
        say("final quantization")
        quantize_prepared(prepared, out_path, calib_inputs, policy, method, result.nodes_to_exclude, cache)
        result.miou_final = scorer.score(load(out_path))[0]
    result.seconds = round(time.perf_counter() - t0, 1)
    return result


def search_pt2e(
    switches: Pt2eSwitches,
    scorer: HoldoutScorer,
    budget: float,
    realize: Callable[[list[str]], Predictor],
    progress: Callable[[str], None] | None = None,
    sensitivity_images: int | None = PT2E_SENSITIVITY_IMAGES,
) -> SearchResult:
    """The same search for a PT2E int8 graph (TFLite). ``realize(ops kept float)`` converts the graph with those
    ops in float and returns the artifact's predictor: the all-int8 check, every budget probe and so the final
    result are measured on converted artifacts. The per-layer sensitivity (a PT2E graph has about 2.5x as many
    layers as ONNX's Conv/MatMul: its adds, muls and clamps are int8 too) runs the int8 numerics in PyTorch
    through ``switches``, no conversion per layer, on the first ``sensitivity_images`` held-out images.
    ``miou_final`` is the chosen probe's, so the caller ships the artifact ``realize`` made for it."""
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)

    def measure(exclude: list[str], images: int | None) -> tuple[float, float]:
        if images is None:  # a budget decision: the converted artifact
            return scorer.score(realize(exclude))
        switches.set_float(exclude)
        return scorer.score(switches.predict, images)

    result = search_float_layers(
        switches.layers, measure, scorer.miou_reference, len(scorer.inputs), budget, say, sensitivity_images
    )
    result.miou_final = scorer.miou_reference - result.probes[len(result.float_layers)]
    result.objective = getattr(scorer, "objective", "mean")
    result.seconds = round(time.perf_counter() - t0, 1)
    return result
