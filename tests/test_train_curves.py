"""benchmarks/train_curves.py and its docs renderer: runs side by side from their train.json logs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(tmp_path: Path, name: str, mious: list[float], ema: bool) -> Path:
    out = tmp_path / name
    out.mkdir()
    history = []
    for k, m in enumerate(mious, 1):
        h = {"epoch": k, "loss": 1.0 / k, "images_per_s": 4.0 + k, "seconds": 80.0, "load_1min": 2.0}
        if k % 2 == 0:
            h.update(val_miou=m, val_iou={"sky": m + 0.1, "pole": m - 0.1})
            if ema:
                h["raw_val_miou"] = m - 0.05
        history.append(h)
    config = {
        "model": "efficientvit-b0",
        "epochs": len(mious),
        "precision": "bf16",
        "channels_last": True,
        "brightness": 0.6,
        "gamma": 0.5,
        "ema_decay": 0.999 if ema else None,
        "threads": 1,
    }
    split = {"train_groups": {"0006R0": 101}, "select_groups": {"0001TP": 62}, "select_shares_groups": []}
    (out / "train.json").write_text(json.dumps({"config": config, "split": split, "history": history}))
    return out


def test_curves_pick_best_and_last_and_render(tmp_path):
    a = _run(tmp_path, "a", [0.1, 0.2, 0.3, 0.5, 0.2, 0.4], ema=True)
    b = _run(tmp_path, "b", [0.1, 0.3, 0.3, 0.35], ema=False)
    doc_path = tmp_path / "curves.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "train_curves.py"),
            f"ema={a}",
            f"plain={b}",
            "--json",
            str(doc_path),
            "--plot",
            str(tmp_path / "curves.png"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "ema: best 50.00 at epoch 4, last 40.00 at epoch 6" in done.stdout
    doc = json.loads(doc_path.read_text())
    ema, plain = doc["runs"]
    assert [c["epoch"] for c in ema["curve"]] == [2, 4, 6] and ema["best"]["raw_miou"] == pytest.approx(0.45)
    assert plain["best"]["epoch"] == 4 and plain["curve"][0]["raw_miou"] is None
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = subprocess.run(
        [sys.executable, str(BENCH / "render_docs.py"), str(doc_path)], capture_output=True, text=True, check=True
    ).stdout
    assert "| ema | efficientvit-b0 | 0006R0 (101) | 0001TP (62) |" in page
    assert "50.00 @ 4 (raw 45.00)" in page and "40.00 @ 6 (raw 35.00)" in page
    assert "| plain | 30.0 | 35.0 | - |" in page  # the curve table: epochs 2, 4, 6


def test_curves_refuse_a_folder_without_a_log(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCH / "train_curves.py"), f"x={tmp_path}", "--json", str(tmp_path / "c.json")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "train.json not found" in done.stderr
    (tmp_path / "train.json").write_text("{not json")
    done = subprocess.run(
        [sys.executable, str(BENCH / "train_curves.py"), f"x={tmp_path}", "--json", str(tmp_path / "c.json")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "not a readable" in done.stderr
    assert not (tmp_path / "c.json").exists()
