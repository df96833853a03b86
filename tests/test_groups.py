"""Sequence-aware selection: whole groups on one side only, the overlap warning, and resumption that replays the
same schedule."""

import pytest
import torch

from edgeseg.data.groups import group_rule, groups_of, shared_groups, split_by_groups
from edgeseg.errors import EdgesegError
from edgeseg.train.trainer import load_training_data, train

STEMS = [f"0001TP_{i:06d}" for i in range(5)] + [f"0006R0_f{i:05d}" for i in range(4)] + ["0016E5_07959", "x"]


def test_split_never_puts_a_group_on_both_sides():
    for holdout in (["0001TP"], ["0006R0"], ["0016E5", "x"], ["0001TP", "0006R0"]):
        cut = split_by_groups(STEMS, None, holdout)
        rule = group_rule(None)
        train_groups = {rule(STEMS[i]) for i in cut.train}
        select_groups = {rule(STEMS[i]) for i in cut.select}
        assert select_groups == set(holdout) and not train_groups & select_groups
        assert sorted(cut.train + cut.select) == list(range(len(STEMS)))


def test_split_refuses_unknown_or_all_groups():
    with pytest.raises(EdgesegError, match="not in the data: the groups are 0001TP, 0006R0, 0016E5, x"):
        split_by_groups(STEMS, None, ["Seq05VD"])
    with pytest.raises(EdgesegError, match="every group"):
        split_by_groups(STEMS, None, ["0001TP", "0006R0", "0016E5", "x"])


def test_declared_groups_file(tmp_path):
    (tmp_path / "groups.yaml").write_text("pattern: '^site([0-9]+)-'\n")
    assert groups_of(["site1-a", "site1-b", "site22-c"], tmp_path) == {"1": 2, "22": 1}
    (tmp_path / "groups.yaml").write_text("groups: {a: morning, b: morning, c: night}\n")
    assert groups_of(["a", "b", "c"], tmp_path) == {"morning": 2, "night": 1}
    assert shared_groups({"morning": 2}, ["b", "c"], tmp_path) == ["morning"]
    (tmp_path / "groups.yaml").write_text("pattern: 'site'\n")
    with pytest.raises(EdgesegError, match="capture group"):
        groups_of(["a"], tmp_path)


# a bit longer than the fixture's default run: two epochs of four images, no warm-up, plain cross-entropy
RUN = dict(epochs=2, scale=(0.25, 0.25), lr=1e-3, warmup_epochs=0, loss="ce", limit_train=4, seed=0, threads=1)


def _cfg(make, out, **kw):
    return make(out, **{**RUN, **kw})


def test_camvid_val_shares_a_sequence_and_select_groups_does_not(tiny_train_config, tmp_path):
    shared = load_training_data(_cfg(tiny_train_config, tmp_path, limit_train=None, limit_val=None))
    assert shared.split["select_shares_groups"] == ["0016E5"]
    honest = load_training_data(
        _cfg(tiny_train_config, tmp_path, limit_train=None, limit_val=None, select_groups=("0001TP",))
    )
    assert honest.split["select_groups"] == {"0001TP": 62} and "0001TP" not in honest.split["train_groups"]
    assert honest.split["select_shares_groups"] == []
    assert len(honest.train_images) == 367 + 101 - 62

    warnings = []
    train(
        _cfg(tiny_train_config, tmp_path / "run", epochs=1, max_steps=1, limit_train=None),
        progress=lambda kind, **f: warnings.append(f["text"]) if kind == "warning" else None,
    )
    assert len(warnings) == 1 and "share group(s) 0016E5 with the training data" in warnings[0]


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_equals_an_uninterrupted_run(tiny_train_config, tmp_path):
    full = train(_cfg(tiny_train_config, tmp_path / "full"))

    def stop_in_epoch_2(kind, **f):
        if kind == "step" and f["epoch"] == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(_cfg(tiny_train_config, tmp_path / "cut"), progress=stop_in_epoch_2)
    resumed = train(_cfg(tiny_train_config, tmp_path / "cut"), resume=True)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert b["epoch"] == a["epoch"] == 2
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-6, rtol=1e-5), k
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-5)


def test_resume_refuses_changed_options(tiny_train_config, tmp_path):
    train(_cfg(tiny_train_config, tmp_path / "r", epochs=1))
    with pytest.raises(EdgesegError, match="cannot resume: lr was 0.001"):
        train(_cfg(tiny_train_config, tmp_path / "r", lr=2e-3), resume=True)


def test_bf16_channels_last_ema_train_and_ship_a_plain_checkpoint(tiny_train_config, tmp_path, monkeypatch):
    """Under bf16 the trainer runs depthwise convs in fp32 (edgeseg.train.speedups); what it saves is contiguous
    and loads strictly into a plain registry model."""
    from edgeseg.models.registry import create_model
    from edgeseg.train import trainer
    from edgeseg.train.speedups import Float32DepthwiseConv2d

    swapped = []
    original = trainer.depthwise_in_fp32
    monkeypatch.setattr(trainer, "depthwise_in_fp32", lambda m: swapped.append(m) or original(m))
    cfg = _cfg(tiny_train_config, tmp_path / "bf16", epochs=1, precision="bf16", channels_last=True, ema_decay=0.9)
    result = train(cfg)
    assert result.history[0]["loss"] > 0
    (model,) = swapped
    assert any(isinstance(m, Float32DepthwiseConv2d) for m in model.modules())
    best = torch.load(tmp_path / "bf16" / "best.pt", weights_only=True)
    assert all(v.is_contiguous() for v in best["model"].values())
    create_model("efficientvit-b0", "camvid")[0].load_state_dict(best["model"])  # strict: the unswapped keys
    assert "ema" in torch.load(tmp_path / "bf16" / "last.pt", weights_only=True)


def test_eval_reports_and_warns_about_groups_shared_with_training():
    from edgeseg.commands.evaluate import evaluate
    from edgeseg.paths import SAMPLE_DATA

    notes = []
    report = evaluate(
        "efficientvit-b0", None, None, SAMPLE_DATA, limit=1, notice=notes.append, fit="resize", size="96x128"
    )
    assert report["groups"] == {"0016E5": 1} and report["shares_training_groups"] == ["0016E5"]
    assert any("share group(s) 0016E5 with the training data" in n for n in notes)
    with pytest.raises(EdgesegError, match="group\\(s\\) 0001TP not in split 'val': its groups are 0016E5"):
        evaluate("efficientvit-b0", None, None, SAMPLE_DATA, groups=["0001TP"])
