import json

import pytest
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
    assert "raw_val_miou" not in log["history"][-1]  # without --ema there is one set of weights
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


def test_same_seed_same_first_step(tiny_train_config, tmp_path):
    def run(out):
        train(tiny_train_config(out, max_steps=1))
        return torch.load(out / "last.pt", weights_only=True)["model"]

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ema_warms_up_and_tracks_batchnorm_statistics():
    """The average follows min(decay, (1+n)/(10+n)) per update, BatchNorm statistics included, and integer buffers
    follow the model: a plain 0.999 average would still be mostly the initialisation after these 30 updates."""
    from edgeseg.train.trainer import _ema, ema_decay_at

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = _ema(model, 0.999)
    init = model[0].weight.detach().clone()
    expected = {k: v.clone().float() for k, v in model.state_dict().items() if v.is_floating_point()}
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(2, 3, 8, 8))  # moves running_mean / running_var / num_batches_tracked
        ema.update_parameters(model)
        d = 0.0 if n == 0 else ema_decay_at(0.999, n)  # the first update copies the model
        for k, v in model.state_dict().items():
            if k in expected:
                expected[k] = d * expected[k] + (1 - d) * v.float()
    averaged = ema.module.state_dict()
    for k, v in expected.items():
        assert torch.allclose(averaged[k], v, atol=1e-5), k
    assert int(averaged["1.num_batches_tracked"]) == 30
    assert ema_decay_at(0.999, 0) == 0.1 and ema_decay_at(0.999, 10**6) == 0.999
    to_model = (averaged["0.weight"] - model[0].weight).norm()
    assert to_model < (averaged["0.weight"] - init).norm()  # a plain 0.999 average would sit near the initialisation


@pytest.mark.parametrize(
    "option, value, message",
    [("--brightness", "1.2", "--brightness 1.2 must lie in [0, 1)"), ("--gamma", "-1", "--gamma -1.0 must lie in")],
)
def test_bad_jitter_is_a_one_line_error(tmp_path, option, value, message):
    from typer.testing import CliRunner

    from edgeseg.cli import app

    out = tmp_path / "run"
    args = ["train", "--model", "efficientvit-b0", "--data", str(tmp_path), "--out", str(out), option, value]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_ema_run_scores_the_average_and_the_raw_weights(tiny_train_config, tmp_path):
    """With --ema the average is what is selected and shipped, and the raw weights are scored beside it."""
    cfg = tiny_train_config(tmp_path / "run", epochs=2, ema_decay=0.9)
    events = []
    result = train(cfg, progress=lambda kind, **f: events.append((kind, f)))
    assert all("raw_val_miou" in h and "val_miou" in h for h in result.history)
    evals = [f for kind, f in events if kind == "eval"]
    assert [e["raw_miou"] for e in evals] == [h["raw_val_miou"] for h in result.history]
