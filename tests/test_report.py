"""The bench report one ships from: the recommended artifact from a fixed bench.json (fastest within the mIoU
budget, latency ties broken by the paired mIoU comparison, ties shown as ties), the load warning, the fp16 note,
and report.html that parses, loads nothing from outside and fits a phone (viewport, scrolling tables)."""

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from edgeseg.bench.decide import compare_with_reference, fp16_notes, load_warnings, recommend
from edgeseg.bench.report import (
    Accuracy,
    BenchReport,
    ClassIoU,
    DataInfo,
    DeviceColumn,
    DeviceInfo,
    Measurement,
    ModelInfo,
    PerImage,
    Stats,
    TargetResult,
    TimingInfo,
    display_path,
    write_reports,
)
from edgeseg.eval.stats import bootstrap_iou

CLASSES = ("sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian", "bicyclist")
N_IMAGES = 40


def _base_counts(seed=0):
    rng = np.random.default_rng(seed)
    union = rng.integers(2_000, 40_000, (N_IMAGES, len(CLASSES)))
    inter = (np.clip(rng.normal(0.65, 0.15, union.shape), 0.05, 0.98) * union).astype(int)
    return inter, union


def _accuracy(inter, union) -> Accuracy:
    ci = bootstrap_iou(inter, union, resamples=300)
    return Accuracy(
        images=N_IMAGES,
        resamples=300,
        miou_ci95=list(ci.mean_ci95),
        per_class={c: ClassIoU(iou=v, ci95=list(x)) for c, v, x in zip(CLASSES, ci.per_class, ci.per_class_ci95)},
        per_image=PerImage(
            names=[f"img{i}" for i in range(N_IMAGES)], iou_inter=inter.tolist(), iou_union=union.tolist()
        ),
    )


def _row(target, median, ci, drop_points, seed=0, load=0.5, status="passed") -> TargetResult:
    inter, union = _base_counts()
    if drop_points:
        rng = np.random.default_rng(seed)
        loss = np.clip(rng.normal(drop_points / 100, 0.8 * drop_points / 100, inter.shape), 0, None) * union
        inter = np.maximum(inter - loss.astype(int), 0)
    acc = _accuracy(inter, union)
    m = Measurement(
        machine="this machine",
        runtime="onnxruntime 1.32.0 (CPU)",
        method="in-process timer",
        stats=Stats(
            n=50,
            warmup=5,
            median_ms=median,
            p90_ms=median * 1.1,
            p99_ms=median * 1.3,
            mean_ms=median,
            std_ms=0.2,
            min_ms=median * 0.9,
            max_ms=median * 1.4,
            median_ci95_ms=list(ci),
            fps=1000 / median,
        ),  # fmt: skip
        state={"loadavg_1min_before": load, "loadavg_1min_after": load, "cores": 2},
    )
    return TargetResult(
        target=target,
        model="efficientvit-b0",
        size="384x480",
        status=status,
        miou=bootstrap_iou(inter, union, resamples=10).mean,
        miou_images=N_IMAGES,
        host=m,
        device=DeviceColumn(device="host", measured=m),
        accuracy=acc,
    )


def _report(rows) -> BenchReport:
    report = BenchReport(
        edgeseg="test",
        created="2026-01-01T00:00:00+00:00",
        command="edgeseg bench --device host",
        device=DeviceInfo(
            name="host",
            title="This machine",
            kind="host",
            runtime="ort",
            reach="local",
            budget_ms=33.3,
            miou_floor=0.6,
        ),  # fmt: skip
        model=ModelInfo(name="efficientvit-b0", dataset="camvid", weights={"tag": "camvid"}),
        data=DataInfo(path="data/camvid", split="val", images=N_IMAGES),
        host={"cpu": "test CPU", "cpus_usable": 2},
        timing=TimingInfo(threads=2, warmup=5, min_runs=30, max_runs=300, max_seconds=5, rel_ci=0.02),
        results=rows,
    )
    compare_with_reference(report.results)
    return report


def _fixed_bench_json(tmp_path: Path, rows) -> BenchReport:
    """Write the report as bench.json and read it back: recommend works from the file alone."""
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_report(rows).model_dump(mode="json")))
    return BenchReport.model_validate_json(path.read_text())


def test_fastest_within_budget_is_recommended_and_equals_are_ties(tmp_path):
    report = _fixed_bench_json(
        tmp_path,
        [
            _row("onnx-fp32", 8.0, (7.8, 8.2), 0),
            _row("onnx-fp16", 19.5, (19.0, 20.1), 0.002),  # 0.002 points: a tie, and slow
            _row("tflite-fp32", 8.1, (7.9, 8.3), 0),  # latency interval overlaps onnx-fp32's, same mIoU
            _row("onnx-int8", 5.0, (4.9, 5.1), 2.0, seed=1),  # fastest, but 2 points below the reference
        ],
    )
    vs = {r.target: r.accuracy.vs_reference for r in report.results}
    assert vs["onnx-fp32"] is None and vs["onnx-fp16"].verdict == "tie" and vs["onnx-int8"].verdict == "worse"
    rec = recommend(report)
    assert rec.target == "onnx-fp32" and rec.reference == "onnx-fp32"
    assert rec.ties == ["tflite-fp32"] and "a tie with tflite-fp32" in rec.text
    assert "onnx-int8" not in rec.considered
    # a looser budget lets the INT8 artifact in: it is the fastest
    assert recommend(report, budget_points=3.0).target == "onnx-int8"


def test_a_latency_tie_goes_to_the_really_more_accurate_artifact(tmp_path):
    report = _fixed_bench_json(
        tmp_path,
        [
            _row("onnx-fp32", 8.0, (7.8, 8.2), 0),
            _row("onnx-int8", 5.0, (4.8, 5.3), 0.6, seed=2),  # a real 0.6-point drop, within the 1-point budget
            _row("tflite-int8", 5.1, (4.9, 5.4), 0.0),  # as fast within the intervals, no drop
        ],
    )
    rec = recommend(report)
    assert rec.target == "tflite-int8"
    assert "as fast as onnx-int8" in rec.text and "more accurate" in rec.text
    assert rec.ties == []  # onnx-int8 is really less accurate: not a tie


def test_nothing_qualifies_says_why(tmp_path):
    report = _fixed_bench_json(tmp_path, [_row("onnx-fp32", 40.0, (39, 41), 0, status="failed_check")])
    rec = recommend(report)
    assert rec.target is None and "onnx-fp32: failed check" in rec.text


def test_load_warning_and_fp16_note():
    report = _report([_row("onnx-fp32", 8.0, (7.8, 8.2), 0, load=3.6), _row("onnx-fp16", 19.5, (19, 20), 0)])
    (warning,) = load_warnings(report)
    assert "1-minute load 3.6 on 2 cores" in warning and "onnx-fp32" in warning
    (note,) = fp16_notes(report)
    assert note.startswith("onnx-fp16 takes 2.4x the time of onnx-fp32 here") and "accelerator" in note


def test_a_version_3_bench_json_still_reads(tmp_path):
    doc = _report([_row("onnx-fp32", 8.0, (7.8, 8.2), 0)]).model_dump(mode="json")
    doc["schema_version"] = 3
    for key in ("recommendation", "warnings"):
        doc.pop(key)
    for r in doc["results"]:
        r.pop("accuracy")
        r["artifact"] = None
    report = BenchReport.model_validate(doc)
    assert recommend(report).target == "onnx-fp32"  # no intervals: still the fastest with an mIoU


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.links, self.meta = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "meta":
            self.meta.append(a)
        for key in ("src", "href", "srcset", "data", "action"):
            if key in a:
                self.links.append(a[key])


def test_report_html_renders_self_contained_and_phone_ready(tmp_path):
    rows = [
        _row("onnx-fp32", 8.0, (7.8, 8.2), 0, load=3.6),
        _row("tflite-fp32", 8.0, (7.9, 8.1), 0),  # the same point: the labels must still be placed
        _row("onnx-fp16", 19.5, (19.0, 20.1), 0.002),
    ]
    report = _report(rows)
    report.warnings = load_warnings(report)
    report.recommendation = recommend(report)
    image = np.zeros((36, 48, 3), dtype=np.uint8)
    examples = [{"name": "img0", "image": image, "label": image, "prediction": image}]
    paths = write_reports(tmp_path / "rep", report, examples, "onnx-fp32 (the recommended artifact) on 1 image")
    page = paths["html"].read_text()
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert any(m.get("name") == "viewport" and "width=device-width" in m.get("content", "") for m in parser.meta)
    assert "script" not in parser.tags and "link" not in parser.tags
    assert parser.links and all(link.startswith("data:image/png;base64,") for link in parser.links)
    assert "http://" not in page and "https://" not in page
    assert page.count("class='scroll'") >= 3  # main, accuracy and per-class tables scroll sideways on a phone
    assert "Recommended on host:" in page and "Warning:" in page and "Why fp16 is slow here" in page
    assert "class='sw'" in page and "pedestrian" in page  # the class colour legend
    assert "edgeseg op-profile" not in page or "/" in page
    md = paths["md"].read_text()
    assert "## Accuracy" in md and "Boundary IoU" in md and "**recommended**: onnx-fp32" in md
    doc = json.loads(paths["json"].read_text())
    assert doc["schema_version"] == 5 and doc["recommendation"]["target"] == "onnx-fp32"


def test_paths_are_shown_relative_to_the_users_folder(tmp_path, monkeypatch):
    from edgeseg.paths import SAMPLE_DATA

    monkeypatch.chdir(tmp_path)
    (tmp_path / "artifacts" / "a").mkdir(parents=True)
    assert display_path(str(tmp_path / "artifacts" / "a")) == "artifacts/a"
    assert display_path(str(SAMPLE_DATA)) == "edgeseg/assets/sample/camvid"
    assert display_path(str(Path.home() / "x" / "y")) == "~/x/y" or Path.home() == Path("/")
    assert display_path("/opt/elsewhere/data") == "/opt/elsewhere/data"  # the user's own path, as given


@pytest.mark.parametrize("budget", [33.3, 1000.0])
def test_pareto_plot_keeps_the_budget_off_the_frame(budget):
    from edgeseg.bench.page import _limits

    (lo, hi), shown = _limits(5.0, 20.0, budget, 1.5, 0.5)
    if shown:
        assert hi > budget * 1.01 and lo < 5.0
    else:
        assert budget == 1000.0 and hi < 30


def test_residency_records_are_rendered_where_a_row_carries_them():
    """Rows gain ``residency`` records (edgeseg.residency.Residency) from the backends; the facts show them."""
    from types import SimpleNamespace

    from edgeseg.bench.report import _residency
    from edgeseg.residency import Residency

    record = Residency(accelerator="nnapi", tool="ORT partitioner 1.32", nodes_total=10, nodes_supported=8,
                       partitions=2, unsupported_ops={"Erf": 2})  # fmt: skip
    row = SimpleNamespace(residency=[record, record.model_dump()], artifact=None)
    assert _residency(row) == [record.summary()] * 2
    assert "nnapi: 8/10 nodes, 2 partitions (not taken: Erf x2)" in _residency(row)[0]
    assert _residency(SimpleNamespace(artifact=None)) == []
