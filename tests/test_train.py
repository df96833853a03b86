import json

import torch

from edgeseg.models.registry import create_model
from edgeseg.models.weights import WeightsSource, load_weights
from edgeseg.train.trainer import TrainConfig, lr_factor, train


def test_training_smoke_loss_decreases_and_checkpoint_loads(camvid, tmp_path):
    cfg = TrainConfig(
        model="efficientvit-b0",
        dataset="camvid",
        data=str(camvid),
        out=str(tmp_path / "run"),
        epochs=10,
        batch_size=2,
        crop=(96, 128),
        scale=(0.25, 0.25),
        lr=1e-2,
        warmup_epochs=0,
        loss="ce",
        eval_every=10,
        limit_train=2,
        limit_val=1,
        seed=0,
    )
    result = train(cfg)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    log = json.loads((tmp_path / "run" / "train.json").read_text())
    assert log["history"][-1]["val_miou"] >= 0 and log["best_epoch"] == 10
    model, _ = create_model("efficientvit-b0", "camvid")
    load_weights(model, WeightsSource(tmp_path / "run" / "best.pt", None, None, None))
    # resume from last.pt continues where it stopped, without redoing epochs
    cfg.epochs = 11
    resumed = train(cfg, resume=True)
    assert [h["epoch"] for h in resumed.history] == list(range(1, 12))


def test_lr_schedule_warms_up_then_decays():
    f = [lr_factor(s, 100, 10, 0.01) for s in range(100)]
    assert f[0] == 0.1 and f[9] == 1.0
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert abs(f[-1] - 0.01) < 1e-3


def test_same_seed_same_first_step(camvid, tmp_path):
    def run(out):
        cfg = TrainConfig(
            model="efficientvit-b0",
            dataset="camvid",
            data=str(camvid),
            out=str(out),
            epochs=1,
            batch_size=2,
            crop=(64, 64),
            max_steps=1,
            limit_train=2,
            limit_val=1,
            eval_every=1,
        )
        train(cfg)
        return torch.load(out / "last.pt", weights_only=True)["model"]

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
