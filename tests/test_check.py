"""`edgeseg check`: a clean run passes, a planted regression fails with a row naming its cause, JUnit XML has one
test case per row, a missing baseline is refused unless --update-baseline, config errors name file and field."""

import json
import platform
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgeseg import check as chk
from edgeseg import gates
from edgeseg.artifact import artifact_sha256
from edgeseg.bench import stats
from edgeseg.cli import app
from edgeseg.paths import PACKAGE_DIR, SAMPLE_DATA

SIZE = "128x160"
ROW = f"efficientvit-b0/onnx-fp32/{SIZE}/host"


def write_config(folder, artifacts, **export) -> str:
    config = {
        "version": 1,
        "data": str(SAMPLE_DATA),
        "limit": 2,
        "parity_images": 2,
        "out": str(artifacts),
        "timing": {"warmup": 1, "runs": 5, "rounds": 3},
        "thresholds": {"miou_floor": 0.3, "max_miou_drop": 1.0, "min_snr_db": 40, "max_size_growth": 0.02},
        "models": [
            {"name": "efficientvit-b0", "weights": "camvid", "size": SIZE, "targets": ["onnx-fp32"], "export": export}
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "edgeseg.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def run_check(config, *extra):
    return CliRunner().invoke(app, ["check", "--config", config, *extra])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A baseline recorded from the default export (exact bicubic head), and the folders used."""
    root = tmp_path_factory.mktemp("check")
    artifacts = root / "artifacts"
    config = write_config(root / "clean", artifacts)
    baseline = root / "baseline.json"
    md = root / "record.md"
    r = run_check(config, "--baseline", str(baseline), "--update-baseline", "--markdown", str(md))
    assert r.exit_code == 0, r.output
    return root, artifacts, config, baseline


def test_baseline_is_recorded_with_artifact_copy_and_no_times(recorded):
    root, _, _, baseline = recorded
    data = json.loads(baseline.read_text())
    assert data["version"] == chk.BASELINE_VERSION and list(data["rows"]) == [ROW]
    row = data["rows"][ROW]
    assert (baseline.parent / row["artifact"]["copy"] / "manifest.json").is_file()
    assert "_ms" not in baseline.read_text()  # no absolute latency in a file other machines compare against


def test_clean_run_passes_and_junit_validates(recorded):
    root, _, config, baseline = recorded
    junit, md = root / "clean.xml", root / "clean.md"
    r = run_check(config, "--baseline", str(baseline), "--junit", str(junit), "--markdown", str(md))
    assert r.exit_code == 0, r.output
    assert "1/1 rows passed" in r.output
    tree = ET.parse(junit).getroot()
    assert tree.tag == "testsuites" and tree.get("tests") == "1" and tree.get("failures") == "0"
    suites = tree.findall("testsuite")
    assert len(suites) == 1
    cases = suites[0].findall("testcase")
    assert len(cases) == 1 and cases[0].get("name") == "onnx-fp32 on host"
    assert cases[0].find("failure") is None
    assert "[passed] parity" in cases[0].find("system-out").text
    assert float(cases[0].get("time")) >= 0
    assert md.read_text().startswith("## edgeseg check: passed (1/1 rows passed)")


def test_planted_regression_fails_with_a_row_naming_the_cause(recorded):
    """The same row exported with the approximate bilinear head (the bicubic-to-bilinear rewrite instead of the
    exact one): a real parity break, caught by the fp32 gate; the changed artifact is timed side by side."""
    root, artifacts, _, baseline = recorded
    config = write_config(root / "planted", artifacts, upsample="bilinear")
    junit, md, report = root / "planted.xml", root / "planted.md", root / "planted.json"
    outputs = ["--junit", str(junit), "--markdown", str(md), "--json", str(report)]
    r = run_check(config, "--baseline", str(baseline), *outputs)
    assert r.exit_code == 1, r.output
    assert "0/1 rows passed" in r.output
    row = json.loads(report.read_text())["rows"][0]
    agreement = row["parity"]["argmax_agreement"]
    assert agreement < 0.999
    failed = {g["name"]: g["detail"] for g in row["gates"] if g["status"] == "failed"}
    assert failed["parity"] == f"argmax agreement {100 * agreement:.2f} % < 99.90 %"
    assert failed["snr"].startswith("SNR ") and "< 40 dB" in failed["snr"]
    # a different artifact than the baseline's: its latency was measured here against the baseline copy
    assert row["latency"] is not None and len(row["latency"]["rounds"]) == 3 and row["latency"]["ratio"] > 0
    tree = ET.parse(junit).getroot()
    assert tree.get("failures") == "1"
    failure = tree.find("testsuite/testcase/failure")
    assert failure is not None and "parity: argmax agreement" in failure.get("message")
    assert f"`{ROW}`: parity: argmax agreement" in md.read_text()
    # a failing run is never recorded as the new reference
    before = baseline.read_text()
    r = run_check(config, "--baseline", str(baseline), "--update-baseline", "--markdown", str(md))
    assert r.exit_code == 1 and "baseline not updated" in r.output
    assert baseline.read_text() == before


def test_missing_baseline_is_an_error_unless_updating(recorded, tmp_path):
    _, _, config, _ = recorded
    r = run_check(config, "--baseline", str(tmp_path / "none.json"), "--markdown", str(tmp_path / "c.md"))
    assert r.exit_code == 2
    assert "baseline" in r.output and "not found" in r.output and "--update-baseline" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "c.md").exists()


def test_row_missing_from_baseline_fails():
    th = chk.Thresholds()
    base = chk.Baseline(path=Path("b.json"), rows={})
    gates = chk.baseline_gates(th, "m/t/1x1/host", {"bytes": 1, "sha256": "x"}, base, False, None)
    assert [(g.name, g.status) for g in gates] == [("baseline", "failed")]
    assert "not in the baseline" in gates[0].detail and "--update-baseline" in gates[0].detail


def _baseline_row(sha="old", size=1000):
    return chk.Baseline(
        path=Path("b.json"),
        rows={"r": {"artifact": {"sha256": sha, "bytes": size, "copy": "b.artifacts/x"}}},
    )


def _ratio(rounds):
    s = sorted(rounds)
    return chk.LatencyRatio(s[len(s) // 2], (s[-1] - s[0]) / 2, rounds, [1.0] * 3, [1.0] * 3, "test")


def test_latency_and_size_gates_judge_ratios_with_a_noise_margin():
    th = chk.Thresholds(max_latency_ratio=1.10, latency_noise=0.05, max_size_growth=0.05)
    art = {"sha256": "new", "bytes": 1200}
    gates = {g.name: g for g in chk.baseline_gates(th, "r", art, _baseline_row(), False, _ratio([1.5, 1.6, 1.55]))}
    assert gates["latency"].status == "failed" and gates["latency"].detail.startswith("x1.55 vs baseline side by side")
    assert gates["size"].status == "failed" and "+20.0 % vs baseline > +5 %" in gates["size"].detail
    # within the limit plus the spread seen between rounds: noise, not a regression
    gates = {g.name: g for g in chk.baseline_gates(th, "r", art, _baseline_row(), False, _ratio([1.0, 1.18, 1.4]))}
    assert gates["latency"].status == "passed"
    # no baseline copy here: not judged, and says why a stored time would not do
    gates = {g.name: g for g in chk.baseline_gates(th, "r", art, _baseline_row(), False, None)}
    assert gates["latency"].status == "not judged" and "not comparable" in gates["latency"].detail
    # recording a new baseline: reported, never failed
    gates = chk.baseline_gates(th, "r", art, _baseline_row(), True, _ratio([2.0, 2.0, 2.0]))
    assert all(g.status != "failed" for g in gates)


def test_absolute_gates_come_from_the_registry():
    """One registry judges check's rows and bench's targets: per-precision parity minimum, the profile's floor
    unless the thresholds set one, one "not judged" for the mIoU gates of untrained weights, nothing but lint and
    "runs here" for an artifact that cannot run here, a budget only where a latency was measured on the device."""
    lint = {"clean": False, "errors": 2, "rules": "tflite"}
    parity = {"argmax_agreement": 0.96, "snr_db": 30.0, "runtime": "test"}
    ev = gates.Evidence(precision="int8", lint=lint, folder="art/x", parity=parity, miou=0.5, miou_reference=0.52,
                        profile_miou_floor=0.6)  # fmt: skip
    judged = {g.name: g for g in gates.judge_absolute(ev)}
    assert list(judged) == ["lint", "parity", "miou floor", "miou drop"]  # SNR off, no latency measured
    assert judged["lint"].reason() == "lint: 2 error(s) with the tflite rules (edgeseg lint art/x)"
    assert judged["parity"].status == "passed" and judged["parity"].detail.endswith(">= 95.00 %")
    assert judged["miou floor"].status == "failed" and judged["miou floor"].detail == "mIoU 50.00 % < 60.00 %"
    assert judged["miou drop"].status == "failed"  # 2 points > 1.0
    ev.thresholds = chk.Thresholds(miou_floor=0.4, min_argmax_agreement=0.99, min_snr_db=40)
    judged = {g.name: g for g in gates.judge_absolute(ev)}
    assert judged["miou floor"].status == "passed" and judged["parity"].detail == "argmax agreement 96.00 % < 99.00 %"
    assert judged["snr"].detail == "SNR 30.0 dB < 40 dB"
    ev.untrained = True
    assert [(g.name, g.status) for g in gates.judge_absolute(ev) if g.name.startswith("miou")] == [
        ("miou", "not judged")
    ]
    ev.why_not_run = "needs macOS"
    assert [g.name for g in gates.judge_absolute(ev)] == ["lint", "runs here"]
    # bench: a latency measured on the device against its budget; a parity not measured is not a failure there
    ev = gates.Evidence(precision="fp16", parity={"argmax_agreement": None, "runtime": "needs macOS"},
                        parity_required=False, latency_ms=40.0, budget_ms=33.3, latency_device="pixel-8")  # fmt: skip
    judged = {g.name: g for g in gates.judge_absolute(ev)}
    assert judged["parity"].status == "not judged"
    assert judged["budget"].reason() == "budget: median 40.0 ms on pixel-8 over the 33.3 ms budget"


def test_a_gate_is_one_registered_class():
    @gates.register_gate
    class EvenBytes(gates.GateRule):
        """Test gate: the artifact file has an even number of bytes."""

        name = "even bytes"

        def judge(self, ev):
            return None if ev.artifact is None else gates.Gate(self.name, "failed", f"{ev.artifact['bytes']} bytes")

    try:
        with pytest.raises(ValueError, match="already registered"):
            gates.register_gate(EvenBytes)
        ev = gates.Evidence(precision="fp32", artifact={"bytes": 3, "sha256": "x"})
        assert gates.judge_absolute(ev)[-1] == gates.Gate("even bytes", "failed", "3 bytes")
    finally:
        del gates.GATES["even bytes"]


def test_latency_ratio_alternates_the_two_artifacts_with_a_warmup_each_round():
    """check's side-by-side timing is bench's interleaved timer: which artifact goes first alternates run by run,
    each round warms up both, and the judged ratio is the median of per-round ratios, so a load that doubles and
    triples between rounds leaves it alone."""
    now, log = [0.0], []

    def call(name, ms):
        def run():
            log.append(name)
            now[0] += ms * (1 + (len(log) - 1) // 10) / 1000  # 10 calls a round: the load grows round by round

        return run

    samples = stats.interleave([call("cur", 3.0), call("base", 2.0)], runs=4, warmup=1, rounds=3, timer=lambda: now[0])
    assert log == ["cur", "base", "cur", "base", "base", "cur", "cur", "base", "base", "cur"] * 3
    assert [len(r[0]) for r in samples] == [4, 4, 4]  # the warm-up calls are not samples
    ratio = chk.ratio_of_rounds(samples, "test")
    assert ratio.current_ms == pytest.approx([3.0, 6.0, 9.0]) and ratio.baseline_ms == pytest.approx([2.0, 4.0, 6.0])
    assert ratio.rounds == pytest.approx([1.5] * 3) and ratio.ratio == pytest.approx(1.5)
    assert ratio.spread == pytest.approx(0.0)


def test_config_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: efficientvit-b0\n    weights: camvid\n    targets: [onnx-fp33]\n")
    r = run_check(str(bad), "--update-baseline")
    assert r.exit_code == 2
    assert f"check config {bad}" in r.output and "models.0.targets" in r.output and "onnx-fp32" in r.output
    bad.write_text("thresholds: {miou_flor: 0.5}\nmodels: []\n")
    r = run_check(str(bad), "--update-baseline")
    assert r.exit_code == 2 and "thresholds.miou_flor" in r.output
    bad.write_text("models:\n  - {name: efficientvit-b0, weights: camvid, targets: [onnx-fp32], devices: [nope]}\n")
    r = run_check(str(bad), "--update-baseline")
    assert r.exit_code == 2 and "unknown device 'nope'" in r.output
    r = run_check(str(tmp_path / "missing.yaml"), "--update-baseline")
    assert r.exit_code == 2 and "not found" in r.output


def test_shipped_example_config_validates():
    config = chk.load_config(PACKAGE_DIR.parent / "examples" / "edgeseg.yaml")
    assert config.models and config.thresholds.lint_clean


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML artifacts run on macOS")
def test_eval_of_a_coreml_artifact_says_it_needs_macos(tmp_path):
    folder = tmp_path / "coreml"
    (folder / "model.mlpackage").mkdir(parents=True)
    manifest = {
        "format": "coreml",
        "target": "coreml-fp32",
        "file": "model.mlpackage",
        "input": {"shape": [1, 3, 96, 128]},
        "output": {"name": "logits"},
        "sha256": artifact_sha256(folder / "model.mlpackage"),  # artifacts are verified before they are run
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    r = CliRunner().invoke(app, ["eval", "--artifact", str(folder)])
    assert r.exit_code == 2 and "needs macOS" in r.output


def test_int8_budget_gate_reads_the_exports_held_out_check():
    from edgeseg.gates import Evidence, judge_absolute

    def gates(mp, untrained=False):
        ev = Evidence(precision="int8", int8_budget=mp, untrained=untrained)
        return {g.name: g for g in judge_absolute(ev)}

    within = {"budget": 0.5, "drop_final": 0.31, "within_budget": True, "holdout_images": 32}
    assert gates(within)["int8 budget"].status == "passed"
    over = {**within, "drop_final": 0.62, "within_budget": False}
    g = gates(over)["int8 budget"]
    assert g.status == "failed" and "0.62 points > budget 0.5" in g.detail
    assert "int8 budget" not in gates(None)  # not an INT8 artifact, or exported without a budget
    assert "int8 budget" not in gates(over, untrained=True)  # untrained: one "miou: not judged" instead
    # an agreement budget (points of argmax disagreement with fp32) compares with fp32, not labels: judged untrained
    agreement = {
        "budget": 2.0,
        "drop_final": 1.56,
        "within_budget": True,
        "holdout_images": 32,
        "objective": "agreement",
    }
    g = gates(agreement, untrained=True)["int8 budget"]
    assert g.status == "passed" and "argmax disagreement 1.56 points <= budget 2" in g.detail
    g = gates({**agreement, "drop_final": 2.9, "within_budget": False}, untrained=True)["int8 budget"]
    assert g.status == "failed"


# ---------------------------------------------------------------- history beside the baseline


def _report(row_id: str, miou: float, parity_failed: bool, bytes_: int = 1000) -> chk.CheckReport:
    gates_ = [chk.Gate("parity", "failed" if parity_failed else "passed", "argmax agreement ...")]
    row = chk.RowResult(
        row_id, "m", "onnx-fp32", "host", {"folder": "f", "bytes": bytes_, "sha256": "s"}, "ort", miou, 0.66, 2,
        {"argmax_agreement": 0.99 if parity_failed else 1.0}, gates_, 1.0,
    )  # fmt: skip
    return chk.CheckReport("c.yaml", "baseline.json", False, "data", 2, [row], 1.0, {})


def test_history_is_appended_read_back_and_flags_n_failures_in_a_row(tmp_path):
    from edgeseg.check_history import append_history, attach_history, history_path, read_history

    path = history_path(tmp_path / "baseline.json")
    assert path == tmp_path / "baseline.history.jsonl"
    base = chk.Baseline(tmp_path / "baseline.json", {"r": {"miou": 0.66, "parity": {"argmax_agreement": 1.0},
                                                          "artifact": {"bytes": 1000}}})  # fmt: skip
    options = chk.HistoryOptions()  # flag after 3
    figures = [(0.66, False), (0.655, True), (0.65, True), (0.64, True)]
    for k, (miou, bad) in enumerate(figures):
        report = _report("r", miou, bad, 1100)
        attach_history(report, base, path, options, "test")
        h = report.history["rows"]["r"]
        assert report.history["runs"] == k + 1 and h.runs == k + 1
        assert h.accuracy_failed_in_a_row == max(0, k)  # the first run passed
        assert h.flagged == (k >= 3)
    assert h.miou == pytest.approx([0.66, 0.655, 0.65, 0.64])
    assert h.since_baseline["miou_points"] == pytest.approx(-2.0)
    assert h.since_baseline["size_percent"] == pytest.approx(10.0)
    assert report.flagged() == ["r"]
    records, bad = read_history(path)
    assert len(records) == 4 and bad == 0 and records[-1]["rows"]["r"]["failed_gates"] == ["parity"]
    md = chk.markdown(report)
    assert "### History" in md and "mIoU -2.00" in md and "size +10.0 %" in md
    assert "66.00 → 65.50 → 65.00 → 64.00" in md
    assert "FLAGGED: accuracy gate failed 3 runs in a row (>= 3)" in md and "**Flagged**" in md
    case = ET.fromstring(chk.junit_xml(report)).find("testsuite/testcase")
    assert "accuracy gate failed 3 runs in a row" in case.find("failure").get("message")
    assert "since baseline: mIoU -2.00" in case.find("system-out").text
    # a passing run ends the streak
    report = _report("r", 0.66, False)
    attach_history(report, base, path, options, "test")
    assert report.history["rows"]["r"].accuracy_failed_in_a_row == 0 and not report.flagged()
    # a torn last line (a crash mid-write) is skipped, and the next record starts on its own line
    with open(path, "a") as f:
        f.write('{"version": 1, "rows": {"r": ')
    append_history(path, {"version": 1, "rows": {}})
    records, bad = read_history(path)
    assert len(records) == 6 and bad == 1


def test_check_appends_history_and_flags_repeated_accuracy_failures(recorded):
    """Two planted (parity-breaking) runs in a row with --flag-after 2: the second is flagged, in check.md and the
    JUnit failure message; the history file beside the baseline holds every run."""
    root, artifacts, _, baseline = recorded
    config = write_config(root / "planted", artifacts, upsample="bilinear")
    md, junit = root / "hist.md", root / "hist.xml"
    for _ in range(2):
        r = run_check(config, "--baseline", str(baseline), "--markdown", str(md), "--junit", str(junit),
                      "--flag-after", "2")  # fmt: skip
        assert r.exit_code == 1, r.output
    history = baseline.with_name("baseline.history.jsonl")
    lines = history.read_text().splitlines()
    assert len(lines) >= 3  # the recording run and these two
    assert all(json.loads(line)["version"] == 1 for line in lines)
    text = md.read_text()
    assert "### History" in text and "FLAGGED: accuracy gate failed" in text
    assert "too few images to tell apart" in text  # 2 images: the paired comparison with PyTorch says so
    assert "accuracy gate failed" in ET.parse(junit).getroot().find("testsuite/testcase/failure").get("message")
    assert "FLAGGED" in r.output
    r = run_check(config, "--baseline", str(baseline), "--markdown", str(md), "--no-history")
    assert len(history.read_text().splitlines()) == len(lines)
