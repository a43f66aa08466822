"""Training: one step lowers its losses, a short fit detects an easy defect, reproducibility, resume, DDP, CLI errors.

Tiny 32 px models (width 8) on one thread keep the whole file to a few seconds but the DDP run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from common.errors import UserError
from trainer.cli import main
from trainer.config import Config, build_config
from trainer.evaluate import score_images
from trainer.fit import fit_arrays, split_validation
from trainer.losses import consistency_loss, d_loss
from trainer.models import build_networks, init_weights
from trainer.steps import make_step
from trainer.tensors import to_tensor

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TINY = ["width=8", "max_width=32", "z_dim=16"]


def tiny_config(variant: str = "ours-proj", epochs: int = 2, **extra: object) -> Config:
    cfg = build_config(variant, {"image_size": 32, "channels": 1, "epochs": epochs, "batch_size": 8,
                                 "device": "cpu"}, TINY)
    for k, v in extra.items():
        setattr(cfg.train if hasattr(cfg.train, k) else cfg.model, k, v)
    return cfg


def discs(n: int, seed: int, defect: bool = False) -> np.ndarray:
    """Grey discs of jittered radius and brightness on a dark background; a defect is a bright square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    out = np.zeros((n, 32, 32, 1), np.uint8)
    for i in range(n):
        r = rng.uniform(8, 11)
        img = np.where((yy - 16) ** 2 + (xx - 16) ** 2 < r * r, rng.uniform(150, 190), 30.0)
        img = img + rng.normal(0, 3, img.shape)
        if defect:
            y0, x0 = rng.integers(2, 22, size=2)
            img[y0:y0 + 8, x0:x0 + 8] = 255.0 - img[y0:y0 + 8, x0:x0 + 8]
        out[i, :, :, 0] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def test_one_step_lowers_the_losses_it_should() -> None:
    cfg = tiny_config()
    torch.manual_seed(0)
    nets = build_networks(cfg.model)
    for n in nets.values():
        init_weights(n)
        n.train()
    algo = make_step(cfg, nets)
    x = to_tensor(discs(8, 1))
    torch.manual_seed(7)
    z = torch.randn(8, cfg.model.z_dim)
    with torch.no_grad():
        z_hat, x_tilde = nets["E"](x), nets["G"](z)
        d_before = d_loss(nets["D"](x, z_hat), nets["D"](x_tilde, z), cfg.train.loss).item()
        c_before = consistency_loss(x, nets["G"](nets["E"](x)), z, nets["E"](nets["G"](z))).item()
    torch.manual_seed(7)  # the step draws the same z
    algo.step(x)
    with torch.no_grad():
        d_after = d_loss(nets["D"](x, z_hat), nets["D"](x_tilde, z), cfg.train.loss).item()
        c_after = consistency_loss(x, nets["G"](nets["E"](x)), z, nets["E"](nets["G"](z))).item()
    assert d_after < d_before  # D's update on the pairs it saw
    assert c_after < c_before  # E/G's update pulls G(E(x)) towards x and E(G(z)) towards z


def test_ae_step_lowers_reconstruction_error() -> None:
    cfg = tiny_config("ae")
    torch.manual_seed(0)
    nets = build_networks(cfg.model)
    algo = make_step(cfg, nets)
    x = to_tensor(discs(8, 2))
    first = algo.step(x)["recon"]
    for _ in range(3):
        last = algo.step(x)["recon"]
    assert last < first


def test_short_fit_detects_an_easy_defect() -> None:
    cfg = tiny_config(epochs=8)
    res = fit_arrays(discs(64, 3), cfg, verbose=False)
    test = np.concatenate([discs(20, 4), discs(20, 5, defect=True)])
    labels = np.r_[np.zeros(20), np.ones(20)]
    scores = score_images(cfg, res.nets, test)[0]
    assert roc_auc_score(labels, scores) > 0.8
    assert 1 <= res.best_epoch <= 8
    assert len(res.val_indices) == 6  # 10% of 64 held out


def test_same_seed_same_losses_other_seed_differs() -> None:
    imgs = discs(24, 6)
    keys = ("loss_d", "loss_eg", "recon", "val_recon")
    runs = [fit_arrays(imgs, tiny_config(seed=s), verbose=False).history for s in (0, 0, 1)]
    a, b, c = ([[h[k] for k in keys] for h in run] for run in runs)
    assert a == b
    assert a != c


def test_validation_split_is_seeded_and_disjoint() -> None:
    tr, val = split_validation(100, 0.1, seed=3)
    assert len(val) == 10 and len(tr) == 90
    assert not set(tr) & set(val)
    assert np.array_equal(val, split_validation(100, 0.1, seed=3)[1])
    assert not np.array_equal(val, split_validation(100, 0.1, seed=4)[1])


def test_resume_continues_the_epoch_count(tmp_path: Path) -> None:
    imgs = discs(24, 8)
    fit_arrays(imgs, tiny_config(epochs=1), out=tmp_path / "a", verbose=False)
    resumed = fit_arrays(imgs, tiny_config(epochs=2), out=tmp_path / "a", resume=True, verbose=False)
    straight = fit_arrays(imgs, tiny_config(epochs=2), out=tmp_path / "b", verbose=False)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[1]["loss_eg"] == straight.history[1]["loss_eg"]  # as if never interrupted
    assert (tmp_path / "a" / "samples" / "epoch_002.png").is_file()
    with pytest.raises(UserError, match="nothing to resume"):
        fit_arrays(imgs, tiny_config(), out=tmp_path / "c", resume=True, verbose=False)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synth.run import synthesize

    out = tmp_path_factory.mktemp("synth") / "line"
    synthesize(out, seed=0, size=32, n_train=20, n_test=10)
    return out


def test_fit_cli_writes_the_run(synth_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["fit", str(synth_dir), "--out", str(run), "--epochs", "1", "--image-size", "32", "--batch-size", "4"]
    for s in TINY:
        args += ["--set", s]
    assert main(args) == 0
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["format"] == 1
    assert payload["input"] == {"size": 32, "channels": 3, "color_order": "BGR", "normalize": "x/127.5-1"}
    assert set(payload["state"]) == {"E", "G", "D", "S"}
    stats = payload["state"]["S"]   # fitted on the training split: not the identity it starts as
    assert stats["map_mean"].shape == (3, 32, 32) and stats["map_mean"].abs().sum() > 0   # one map per channel
    assert (stats["map_scale"] > 0).all() and not torch.equal(stats["map_scale"], torch.ones(3, 32, 32))
    # the pooled L_R's statistics too, with the score's pooling (F18): not the identity either
    assert stats["lr_mean"].item() != 0.0 and stats["lr_scale"].item() not in (0.0, 1.0)
    assert payload["threshold"] is not None and payload["metrics"]["threshold_source"].startswith("mean + 3 sd")
    assert payload["config"]["model"]["width"] == 8
    assert len(payload["run"]["val_names"]) == 2
    assert (run / "last.pt").is_file() and (run / "log.jsonl").is_file()
    assert main(["fit", str(synth_dir), "--out", str(run), "--epochs", "2", "--resume"]) == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_ddp_two_cpu_processes_write_a_model(synth_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "trainer.cli", "fit", str(synth_dir), "--out", str(run), "--epochs", "1", "--image-size", "32",
           "--batch-size", "4", "--device", "cpu"]
    for s in TINY:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = torch.load(run / "model.pt", weights_only=True)
    assert set(payload["state"]) == {"E", "G", "D", "S"}
    stats = payload["state"]["S"]   # fitted on the training split: not the identity it starts as
    assert stats["map_mean"].shape == (3, 32, 32) and stats["map_mean"].abs().sum() > 0   # one map per channel
    assert (stats["map_scale"] > 0).all() and not torch.equal(stats["map_scale"], torch.ones(3, 32, 32))
    assert payload["threshold"] is not None and payload["metrics"]["threshold_source"].startswith("mean + 3 sd")
    assert len((run / "log.jsonl").read_text().splitlines()) == 1  # rank 0 alone writes


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "gan"], "unknown model 'gan'"),
    (["--set", "colour=1"], "unknown option 'colour'"),
    (["--set", "alpha=lots"], "bad value for alpha"),
    (["--set", "loss=wgan"], "bad value for loss"),
    (["--set", "alpha"], "bad --set"),
    (["--epochs", "0"], "--epochs must be at least 1"),
])
def test_fit_cli_errors_exit_2_with_one_line(argv: list[str], message: str, synth_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(synth_dir), "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_fit_cli_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and len(err.strip().splitlines()) == 1


def test_config_presets_recipe_and_parsing() -> None:
    paper = build_config("egbad", sets=["recipe=paper", "lr=3e-4"])
    assert (paper.train.loss, paper.model.d_batchnorm, paper.train.alpha) == ("bce", True, 0.0)
    assert paper.train.lr == pytest.approx(3e-4)  # later --set items win over the recipe
    shipped = build_config("ours-proj")
    assert (shipped.train.loss, shipped.model.d_batchnorm, shipped.train.alpha) == ("hinge", False, 0.9)
    assert build_config("ae").score.lam == 0.0
    assert build_config("ours-proj", sets=["d_batchnorm=yes"]).model.d_batchnorm is True
    for bad, msg in [("d_batchnorm=maybe", "bad value for d_batchnorm"), ("recipe=egbad", "bad value for recipe"),
                     ("epochs=0", "must be > 0"), ("alpha=1.5", r"in \[0, 1\]"), ("variant=ae", "--model")]:
        with pytest.raises(UserError, match=msg):
            build_config("ours-proj", sets=[bad])


def test_mnist_defaults_sit_under_explicit_options() -> None:
    from trainer.config import build_config, with_mnist_defaults

    cfg = build_config("ours-proj", with_mnist_defaults({"epochs": None, "seed": 3, "image_size": None}, True))
    assert (cfg.train.epochs, cfg.score.score_reduce, cfg.train.shift, cfg.train.seed) == (40, "mean", 0.0, 3)
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.model.image_size == 32   # a 28-px digit trains at 32 px unless told otherwise
    assert cfg.model.z_dim == 16        # a narrow code for a one-class digit model (F19) ...
    assert build_config("ours-proj", with_mnist_defaults({"z_dim": 64}, True)).model.z_dim == 64   # ... unless told
    assert build_config("ours-proj", with_mnist_defaults({"epochs": 7, "image_size": 64}, True)).model.image_size == 64
    assert build_config("ours-proj", with_mnist_defaults({"epochs": 7}, True)).train.epochs == 7
    line = build_config("ours-proj", with_mnist_defaults({"epochs": None, "image_size": None}, False))
    assert (line.train.epochs, line.score.score_reduce, line.model.image_size, line.model.z_dim) == (80, "max", 128, 100)


def test_weight_average_is_what_ships_and_resumes_exactly(tmp_path: Path) -> None:
    imgs = discs(24, 8)
    plain = fit_arrays(imgs, tiny_config(epochs=2, ema=0.0), verbose=False)
    averaged = fit_arrays(imgs, tiny_config(epochs=2, ema=0.9), out=tmp_path / "a", verbose=False)
    # same seed, same steps: the live weights follow the same path, the shipped (averaged) ones differ
    assert plain.history[1]["loss_eg"] == pytest.approx(averaged.history[1]["loss_eg"], rel=1e-5)
    w_plain, w_avg = plain.nets["G"].state_dict(), averaged.nets["G"].state_dict()
    assert any(not torch.equal(w_plain[k], w_avg[k]) for k in w_plain)
    assert plain.history[1]["val_recon"] != averaged.history[1]["val_recon"]   # validation judges the average
    fit_arrays(imgs, tiny_config(epochs=1, ema=0.9), out=tmp_path / "b", verbose=False)
    resumed = fit_arrays(imgs, tiny_config(epochs=2, ema=0.9), out=tmp_path / "b", resume=True, verbose=False)
    assert resumed.history[1]["val_recon"] == averaged.history[1]["val_recon"]
    for k, v in averaged.nets["E"].state_dict().items():
        assert torch.equal(v, resumed.nets["E"].state_dict()[k])


def test_retired_options_are_refused_by_set_and_old_configs_still_load(tmp_path: Path) -> None:
    from trainer.config import RETIRED
    from trainer.fit import FitOptions

    for key in RETIRED:                      # measured, did not help, removed: --set names the finding
        with pytest.raises(UserError, match=f"option '{key}' was retired"):
            build_config("ours-proj", sets=[f"{key}=1"])
    stored = build_config().to_dict()        # what a checkpoint written before the retirement holds
    stored["model"]["d_sn_heads"] = False
    stored["train"].update(adv_balance=False, adv_match=False, lr_schedule="constant", rotate=0.0,
                           input_noise=0.0, input_erase=0.0, cons_reduce="sum")
    assert Config.from_dict(stored) == build_config()
    stored["train"]["adv_balance"] = True    # trained with it: the weights still score as they are
    assert Config.from_dict(stored) == build_config()
    stored["model"]["d_sn_heads"] = True     # but D's heads had spectral norm: those weights do not fit
    with pytest.raises(UserError, match="d_sn_heads"):
        Config.from_dict(stored)
    fit_arrays(discs(24, 8), tiny_config(epochs=1), out=tmp_path / "a", verbose=False)
    last = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    last["config"]["train"]["rotate"] = 5.0  # a run started with a retired option cannot go on without it
    torch.save(last, tmp_path / "a" / "last.pt")
    with pytest.raises(UserError, match="rotate=5.0"):
        FitOptions(data_dir=tmp_path, out=tmp_path / "a", resume=True).config()
