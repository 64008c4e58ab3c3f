"""The training loop on small constructed shards: artifacts, determinism, per-modality logits, registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from avbias.errors import ParamsError
from avbias.methods import METHODS, create_method, register
from avbias.methods.registry import Method
from avbias.models.fusion import AVClassifier
from avbias.train.loop import train_run

SHIPPED = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
PARAMS = {
    "model": SHIPPED["model"] | {"width": 8},
    "train": SHIPPED["train"] | {"epochs": 3, "batch_size": 8, "lr": 0.05, "lr_step": 2, "frames_per_sample": 1,
                                 "frame_window": "random", "device": "cpu"},
    "methods": SHIPPED["methods"],
}


def test_run_writes_artifacts_and_selects_on_validation(tmp_path: Path, features: Path) -> None:
    metrics = train_run("synth_cremad", "baseline", 0, features, tmp_path, PARAMS)
    assert {p.name for p in tmp_path.iterdir()} == {"metrics.json", "curve.csv", "outputs.npz", "model.pt"}
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert len(curve) == 3
    assert metrics["best_epoch"] == int(curve["val_acc"].idxmax())
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["acc"] == metrics["test"]["acc"]
    with np.load(tmp_path / "outputs.npz") as out:
        assert out["head_weight"].shape == (6, 128)                 # 2 modalities x (8 x width)
        for split in ("val", "test"):
            # Per-modality logits add up to the fused logits.
            np.testing.assert_allclose(out[f"{split}_logits_audio"] + out[f"{split}_logits_visual"],
                                       out[f"{split}_logits"], rtol=1e-5, atol=1e-5)
            assert out[f"{split}_features_audio"].shape == (8, 64)
        assert list(out["test_clip_ids"]) == [f"c{i:03d}" for i in range(40, 48)]


def test_same_seed_same_metrics_other_seed_differs(tmp_path: Path, features: Path) -> None:
    a = train_run("synth_cremad", "unimodal_audio", 1, features, tmp_path / "a", PARAMS)
    b = train_run("synth_cremad", "unimodal_audio", 1, features, tmp_path / "b", PARAMS)
    train_run("synth_cremad", "unimodal_audio", 2, features, tmp_path / "c", PARAMS)
    assert a["val"] == b["val"] and a["test"] == b["test"]
    assert pd.read_csv(tmp_path / "a" / "curve.csv")["train_loss"].tolist() == \
        pd.read_csv(tmp_path / "b" / "curve.csv")["train_loss"].tolist()
    assert pd.read_csv(tmp_path / "a" / "curve.csv")["train_loss"].tolist() != \
        pd.read_csv(tmp_path / "c" / "curve.csv")["train_loss"].tolist()
    assert a["modalities"] == ["audio"]


def test_registry() -> None:
    assert {"baseline", "unimodal_audio", "unimodal_visual"} <= set(METHODS)
    assert create_method("unimodal_visual", PARAMS).modalities == ("visual",)
    assert create_method("baseline", PARAMS).modalities == ("audio", "visual")
    with pytest.raises(ValueError, match="registered twice"):
        register("baseline")(Method)
    with pytest.raises(ParamsError, match="unknown method 'nope'"):
        create_method("nope", PARAMS)


def test_concat_fusion_exposes_modality_logits() -> None:
    torch.manual_seed(0)
    model = AVClassifier(("audio", "visual"), 6, width=8).eval()
    inputs = {"audio": torch.randn(3, 1, 16, 12), "visual": torch.randn(3, 2, 3, 16, 16)}
    out = model(inputs)
    w, b = model.head.fc.weight, model.head.fc.bias
    torch.testing.assert_close(out.modality_logits["audio"], out.features["audio"] @ w[:, :64].T + b / 2)
    torch.testing.assert_close(out.modality_logits["visual"], out.features["visual"] @ w[:, 64:].T + b / 2)
    torch.testing.assert_close(out.logits, torch.cat([out.features["audio"], out.features["visual"]], 1) @ w.T + b)


# Each method's own mechanism, visible in its training curve.
MECHANISM = {"ogm_ge": "coeff_audio", "gblending": "weight_fused", "pmr": "beta", "mmpareto": "k_mm_audio",
             "adaptive_fusion": "alpha_audio"}


def test_every_method_learns_and_pretrained_runs_reuse_unimodal_encoders(tmp_path: Path, features: Path) -> None:
    params = {**PARAMS, "train": {**PARAMS["train"], "epochs": 3, "optimizer": "adamw", "lr": 0.01,
                                  "weight_decay": 0.0}}
    audio_path, visual_path = (tmp_path / m / "model.pt" for m in ("unimodal_audio", "unimodal_visual"))
    for name in ["unimodal_audio", "unimodal_visual", *sorted(set(METHODS) - {"unimodal_audio", "unimodal_visual"})]:
        pretrained = [audio_path, visual_path] if create_method(name, params).pretrained else []
        metrics = train_run("synth_cremad", name, 0, features, tmp_path / name, params, pretrained=pretrained)
        curve = pd.read_csv(tmp_path / name / "curve.csv")
        if pretrained:   # starts from trained encoders: below the from-scratch joint model's first epoch
            baseline = pd.read_csv(tmp_path / "baseline" / "curve.csv")["train_loss"].iloc[0]
            assert curve["train_loss"].iloc[0] < baseline, (name, curve["train_loss"].tolist(), baseline)
        else:
            assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0], (name, curve["train_loss"].tolist())
        assert not (tmp_path / name / "checkpoint.pt").exists(), name
        assert metrics["literature"]["best_test_acc"] >= metrics["test"]["acc"], name    # best over epochs, on test
        assert metrics["selection"] == "val" and metrics["environment"]["threads"] >= 1
        if name in MECHANISM:
            assert curve[MECHANISM[name]].notna().all(), name
        with np.load(tmp_path / name / "outputs.npz") as out:
            assert ("test_logits_zero_audio_visual" in out) == (len(metrics["modalities"]) == 2), name
    assert pd.read_csv(tmp_path / "unimodal_audio" / "curve.csv")["train_acc"].iloc[-1] > 0.5   # the label is audible
    audio = torch.load(audio_path, weights_only=False)["state_dict"]
    probe = torch.load(tmp_path / "linear_probe" / "model.pt", weights_only=False)["state_dict"]
    # The linear probe trains the decision layer only: its encoders (and BatchNorm statistics) are the unimodal ones.
    for key, value in audio.items():
        if key.startswith("encoders.audio."):
            assert torch.equal(probe[key], value), key
    finetuned = torch.load(tmp_path / "pretrain_finetune" / "model.pt", weights_only=False)["state_dict"]
    assert not torch.equal(finetuned["encoders.audio.net.stem.0.weight"], audio["encoders.audio.net.stem.0.weight"])
    with pytest.raises(ValueError, match="needs the model.pt of runs"):
        train_run("synth_cremad", "linear_probe", 0, features, tmp_path / "x", params)


def test_mla_updates_each_encoder_once_per_batch_audio_then_visual(features: Path) -> None:
    """The authors' MLA schedule: per batch, one audio step then one visual step (two optimiser steps). In the
    visual step the audio encoder moves too, from momentum and weight decay on its zeroed gradient (torch
    1.8.1's zero_grad, `zero_grad: zeros`); tests/test_fidelity.py checks that step by hand."""
    from avbias.train.loop import Trainer

    trainer = Trainer(create_method("mla", PARAMS), features, PARAMS, seed=0, pretrained=[])
    encoders = trainer.model.encoders
    updated: list[tuple[str, ...]] = []
    step = trainer.optimizer.step

    def recording_step(*args: object, **kwargs: object) -> object:
        before = {m: [p.detach().clone() for p in encoders[m].parameters()] for m in encoders}
        result = step(*args, **kwargs)
        updated.append(tuple(m for m in encoders if any(not torch.equal(a, b) for a, b in
                                                        zip(before[m], encoders[m].parameters(), strict=True))))
        return result

    trainer.optimizer.step = recording_step
    trainer.train_epoch(0)
    batches = -(-32 // PARAMS["train"]["batch_size"])                          # 32 train clips
    assert updated == [("audio",), ("audio", "visual")] * batches
    alternate = Trainer(create_method("mla", {"methods": {"mla": {"schedule": "alternate"}}}), features, PARAMS, 0, [])
    steps = []
    alternate.optimizer.step = lambda *a, **k: steps.append(1)
    alternate.train_epoch(0)
    assert len(steps) == batches                                               # one modality a batch: half the updates


def test_results_do_not_depend_on_where_the_data_lives(tmp_path: Path, features: Path) -> None:
    """In memory, or read from the memory-mapped shards by 2 DataLoader workers: the same run."""
    a = train_run("synth_cremad", "baseline", 3, features, tmp_path / "a", PARAMS, in_memory="true")
    b = train_run("synth_cremad", "baseline", 3, features, tmp_path / "b", PARAMS, in_memory="false", num_workers=2)
    assert a["val"] == b["val"] and a["test"] == b["test"]


def test_interrupted_run_resumes_to_the_same_metrics(tmp_path: Path, features: Path) -> None:
    """SIGKILL a training process after its first epoch checkpoint; the rerun resumes and ends identically."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from avbias.methods import run_params_json

    params = {**PARAMS, "train": {**PARAMS["train"], "epochs": 8}}
    cmd = [sys.executable, "-m", "avbias", "train", "--params", run_params_json(params, "ogm_ge", "synth_cremad"),
           "--dataset", "synth_cremad", "--method", "ogm_ge", "--seed", "0", "--features", str(features)]
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "killed")], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run([*cmd, "--out", str(tmp_path / "killed")], capture_output=True, text=True, check=True)
    assert "resuming" in resumed.stderr
    whole = subprocess.run([*cmd, "--out", str(tmp_path / "whole")], capture_output=True, text=True, check=True)
    assert "resuming" not in whole.stderr
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("killed", "whole"))
    assert a["val"] == b["val"] and a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]
    assert pd.read_csv(tmp_path / "killed" / "curve.csv")["train_loss"].tolist() == \
        pd.read_csv(tmp_path / "whole" / "curve.csv")["train_loss"].tolist()


def test_the_trainer_provides_what_methods_may_read(features: Path) -> None:
    """Methods type against avbias.methods.registry.RunContext: every member exists on the Trainer and holds
    what it says (steps per epoch as len(train_loader), drop_last honoured)."""
    import typing

    from avbias.methods.registry import RunContext
    from avbias.train.loop import Trainer

    for drop_last, steps in ((False, 4), (True, 3)):    # 32 training clips, batches of 10
        params = PARAMS | {"train": PARAMS["train"] | {"batch_size": 10, "drop_last": drop_last}}
        trainer = Trainer(create_method("baseline", params), features, params, 0, [])
        members = set(typing.get_type_hints(RunContext)) | {"train_batches", "predict"}
        assert all(hasattr(trainer, m) for m in members)
        assert trainer.train_batches == steps
        assert trainer.splits == ("train", "val", "test") and trainer.num_classes == 6
