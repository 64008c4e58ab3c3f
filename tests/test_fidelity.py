"""Golden tests against the authors' released code and BalanceBenchmark (issue 21, sections 2 and 3).

Each expected number is computed here by hand (numpy or plain arithmetic) from the reference formula,
written out in the test; sources are cited in docs/methods.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from avbias.config import load_params
from avbias.methods import create_method, resolve_hyperparams
from avbias.methods.mla import update_projector_entrywise
from avbias.methods.mmpareto import combine, pareto_weights
from avbias.methods.pmr import class_prototypes
from avbias.models.fusion import AVClassifier
from avbias.train.loader import Augment, visual_inputs
from avbias.train.loop import Trainer

ROOT = Path(__file__).parents[1]
SHIPPED = yaml.safe_load((ROOT / "params.yaml").read_text())


def tiny_params(train: dict[str, Any] | None = None, methods: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": SHIPPED["model"] | {"width": 8},
            "train": SHIPPED["train"] | {"epochs": 1, "batch_size": 8, "lr": 0.05, "frames_per_sample": 1,
                                         "device": "cpu"} | (train or {}),
            "methods": methods or {}}


def av_batch(n: int = 6, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = {"audio": torch.randn(n, 1, 16, 12, generator=g), "visual": torch.randn(n, 1, 3, 16, 16, generator=g)}
    return inputs, torch.arange(n) % 3


# --- MLA: BalanceBenchmark's projector -------------------------------------------------------------------

def test_mla_balancebenchmark_projector_divides_entry_by_entry() -> None:
    # P = I, x = (1, 2), alpha 0.5: k = P x = (1, 2); k k^T = [[1, 2], [2, 4]]; alpha + k x^T = [[1.5, 2.5],
    # [2.5, 4.5]]; entry by entry: [[2/3, 0.8], [0.8, 8/9]]; P - that = [[1/3, -0.8], [-0.8, 1/9]], then / ||.||_F.
    raw = np.array([[1 / 3, -0.8], [-0.8, 1 / 9]])
    expected = raw / np.sqrt((raw**2).sum())
    got = update_projector_entrywise(torch.eye(2, dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64),
                                     0.5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_mla_balancebenchmark_projection_of_the_head_gradient_matches_gsplugin() -> None:
    """Through the method: the second step's head gradient is g + g P^T with GSPlugin's entry-wise P."""
    torch.manual_seed(0)
    model = AVClassifier(("audio", "visual"), 3, width=8, fusion="shared")
    method = create_method("mla", {"methods": {"mla": {"projection": "balancebenchmark"}}})
    inputs, labels = av_batch()
    grads = []
    for (m,) in method.step_modalities(0):                 # batch 0 of 1: alpha = 0.1^(1 + 0/1) = 0.1
        model.zero_grad(set_to_none=True)
        out = model({m: inputs[m]})
        method.loss(out, labels, 0).backward()
        g = model.head.fc.weight.grad.double().numpy().copy()
        method.after_backward(model, out, labels, 0)
        grads.append((g, out.features[m].detach().double().mean(0).numpy(), model.head.fc.weight.grad.double()))
    (g0, _, after0), (g1, x, after1) = grads
    np.testing.assert_allclose(after0.numpy(), g0)        # nothing on the very first step (exp_count 0)
    k = x                                                   # k = P x with P = I
    p = np.eye(len(x)) - np.outer(k, k) / (0.1 + np.outer(k, x))
    p /= np.sqrt((p**2).sum())
    np.testing.assert_allclose(after1.numpy(), g1 + g1 @ p.T, rtol=1e-4, atol=1e-6)


# --- MLA: torch 1.8.1's zero_grad -------------------------------------------------------------------------

def _first_batch(features: Path, zero_grad: str) -> dict[str, Any]:
    """Parameters before the first batch, the audio gradient of its first step, and parameters after its
    second (visual) step, with SGD lr 0.05, momentum 0.9, weight decay 0.01."""
    params = tiny_params({"weight_decay": 0.01}, {"mla": {"zero_grad": zero_grad}})
    trainer = Trainer(create_method("mla", params), features, params, seed=0, pretrained=[])
    enc = trainer.model.encoders
    record: dict[str, Any] = {"before": {m: [p.detach().clone() for p in enc[m].parameters()] for m in enc}}
    step = trainer.optimizer.step

    def recording_step(*args: object, **kwargs: object) -> object:
        calls = record.setdefault("calls", 0)
        if calls == 0:
            record["grad_audio"] = [p.grad.clone() for p in enc["audio"].parameters()]
            record["visual_grad_is_none"] = all(p.grad is None for p in enc["visual"].parameters())
        if calls == 1:
            record["audio_grad_in_visual_step"] = [p.grad for p in enc["audio"].parameters()]
        result = step(*args, **kwargs)
        if calls == 1:
            record["after"] = {m: [p.detach().clone() for p in enc[m].parameters()] for m in enc}
        record["calls"] = calls + 1
        return result

    trainer.optimizer.step = recording_step
    trainer.train_epoch(0)
    return record


def test_mla_zero_grad_zeros_gives_the_idle_encoder_a_momentum_and_weight_decay_step(features: Path) -> None:
    """torch 1.8.1: after the audio step, zero_grad() leaves zero tensors, so in the visual step SGD moves the
    audio encoder by lr (m buf + wd p). By hand, first batch (no momentum buffer yet):
    audio step  buf1 = g + wd p0,            p1 = p0 - lr buf1;
    visual step buf2 = m buf1 + (0 + wd p1), p2 = p1 - lr buf2."""
    lr, m, wd = 0.05, 0.9, 0.01
    record = _first_batch(features, "zeros")
    assert record["visual_grad_is_none"]                    # the visual encoder sits out the audio step entirely
    assert all(g is not None and not g.any() for g in record["audio_grad_in_visual_step"])
    for p0, g, p2 in zip(record["before"]["audio"], record["grad_audio"], record["after"]["audio"], strict=True):
        p0, g = p0.double().numpy(), g.double().numpy()
        buf1 = g + wd * p0
        p1 = p0 - lr * buf1
        buf2 = m * buf1 + wd * p1
        np.testing.assert_allclose(p2.double().numpy(), p1 - lr * buf2, rtol=1e-5, atol=1e-7)


def test_mla_zero_grad_none_leaves_the_idle_encoder_alone(features: Path) -> None:
    lr, wd = 0.05, 0.01
    record = _first_batch(features, "none")
    assert all(g is None for g in record["audio_grad_in_visual_step"])
    for p0, g, p2 in zip(record["before"]["audio"], record["grad_audio"], record["after"]["audio"], strict=True):
        expected = p0.double().numpy() - lr * (g.double().numpy() + wd * p0.double().numpy())   # the audio step only
        np.testing.assert_allclose(p2.double().numpy(), expected, rtol=1e-5, atol=1e-7)


def test_mla_default_is_the_released_codes_zero_grad_and_balancebenchmark_keeps_it() -> None:
    assert create_method("mla", {}).hp.zero_grad == "zeros"
    bb = load_params(ROOT / "params.yaml", ROOT / "config/protocols/balancebenchmark.yaml")
    assert resolve_hyperparams("mla", bb, "cremad").zero_grad == "zeros"   # torch 1.12.1 zeroes too


# --- MMPareto: BalanceBenchmark's unimodal losses through the fusion head's blocks -------------------------

def test_mmpareto_fusion_blocks_route_unimodal_losses_through_the_concat_head() -> None:
    torch.manual_seed(2)
    method = create_method("mmpareto", {"methods": {"mmpareto": {"unimodal_heads": "fusion_blocks"}}})
    assert method.aux_heads is False and create_method("mmpareto", {}).aux_heads is True   # default: separate
    model = AVClassifier(("audio", "visual"), 3, width=8, aux_heads=method.aux_heads)
    inputs, labels = av_batch(seed=2)
    out = model(inputs)
    w, b = model.head.fc.weight, model.head.fc.bias
    d = out.features["audio"].shape[1]
    blocks = {"audio": out.features["audio"] @ w[:, :d].T + b / 2,          # W_m f_m + b / M, M = 2
              "visual": out.features["visual"] @ w[:, d:].T + b / 2}
    loss = method.loss(out, labels, 0)
    expected = F.cross_entropy(out.logits, labels) + sum(F.cross_entropy(z, labels) for z in blocks.values())
    torch.testing.assert_close(loss, expected)
    enc = list(model.encoders["visual"].parameters())
    g_mm = torch.autograd.grad(F.cross_entropy(out.logits, labels), enc, retain_graph=True)
    g_uni = torch.autograd.grad(F.cross_entropy(blocks["visual"], labels), enc, retain_graph=True)
    method.backward(model, out, labels, 0, loss)
    k = pareto_weights(torch.cat([g.flatten() for g in g_mm]), torch.cat([g.flatten() for g in g_uni]))
    for p, a, c in zip(enc, g_mm, g_uni, strict=True):
        torch.testing.assert_close(p.grad, combine(a, c, k, 1.5), rtol=1e-4, atol=1e-6)


def test_balancebenchmark_preset_uses_its_own_mmpareto_heads_mla_projector_and_pmr_momentum() -> None:
    bb = load_params(ROOT / "params.yaml", ROOT / "config/protocols/balancebenchmark.yaml")
    assert resolve_hyperparams("mmpareto", bb, "cremad").unimodal_heads == "fusion_blocks"
    assert resolve_hyperparams("mla", bb, "cremad").projection == "balancebenchmark"
    pmr = resolve_hyperparams("pmr", bb, "cremad")
    assert (pmr.momentum_starts, pmr.prototype_inputs, pmr.alpha, pmr.momentum) == (1, "train", 0.6, 0.5)
    assert bb["train"]["frame_augment_scope"] == "frame"


# --- PMR ---------------------------------------------------------------------------------------------------

def _pmr_trainer(features: Path, **hp: Any) -> Trainer:
    params = tiny_params({"frame_window": "random"}, {"pmr": {"prototype_fraction": 0.5} | hp})
    return Trainer(create_method("pmr", params), features, params, seed=0, pretrained=[])


def _fresh_prototypes(trainer: Trainer, train_inputs: bool) -> dict[str, np.ndarray]:
    pred = trainer.predict("train", fraction=0.5, train_inputs=train_inputs)
    return {m: class_prototypes(pred[f"features_{m}"], pred["labels"], trainer.num_classes)
            for m in ("audio", "visual")}


@pytest.mark.parametrize(("inputs", "augmented"), [("train", True), ("eval", False)])
def test_pmr_prototypes_come_from_the_train_loaders_augmented_inputs(features: Path, inputs: str,
                                                                     augmented: bool) -> None:
    """calculate_prototype(train_dataloader): CramedDataset's train transform (crop + flip) applies."""
    trainer = _pmr_trainer(features, prototype_inputs=inputs)
    state = trainer.generator.get_state()
    trainer.method.epoch_start(trainer.model, 0, trainer)
    for train_inputs in (augmented, not augmented):
        trainer.generator.set_state(state)
        same = np.allclose(trainer.method.prototypes["visual"].numpy(),
                           _fresh_prototypes(trainer, train_inputs)["visual"], atol=1e-6)
        assert same == (train_inputs == augmented)
    assert create_method("pmr", {}).hp.prototype_inputs == "train"


def test_pmr_momentum_first_acts_on_epoch_twos_prototypes(features: Path) -> None:
    """main(): prototypes before epoch 0, then after each epoch e with momentum only when e > 0, so the
    prototypes used in epoch 1 are fresh and those of epoch 2 are (1 - m) fresh + m old."""
    trainer = _pmr_trainer(features, momentum=0.5)
    method, old = trainer.method, None
    for epoch in range(3):
        state = trainer.generator.get_state()
        fresh = _fresh_prototypes(trainer, True)["audio"]
        trainer.generator.set_state(state)
        method.epoch_start(trainer.model, epoch, trainer)
        expected = fresh if epoch < 2 else 0.5 * fresh + 0.5 * old
        np.testing.assert_allclose(method.prototypes["audio"].numpy(), expected, rtol=1e-5, atol=1e-6)
        old = method.prototypes["audio"].numpy()
    assert create_method("pmr", {}).hp.momentum_starts == 2


def test_pmr_window_and_cremad_values_are_the_authors() -> None:
    """argparse: --modulation_ends 100, --alpha 1.0, --momentum_coef 0.2; CREMA-D concat scripts (bash.sh):
    --alpha 2.0 --momentum_coef 0.0 --modulation_ends 70; inclusive window (starts <= epoch <= ends)."""
    shipped = load_params(ROOT / "params.yaml")
    default = create_method("pmr", shipped, "kinetics_sounds")
    assert (default.hp.alpha, default.hp.momentum, default.hp.modulation_ends) == (1.0, 0.2, 100)
    assert default.in_window(100) and not default.in_window(101)
    for dataset in ("cremad", "synth_cremad"):
        cremad = create_method("pmr", shipped, dataset)
        assert (cremad.hp.alpha, cremad.hp.momentum, cremad.hp.modulation_ends) == (2.0, 0.0, 70)
        assert cremad.in_window(70) and not cremad.in_window(71)


# --- Frames ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["random_resized_crop", "flip"])
def test_training_frames_are_transformed_each_on_its_own(kind: str) -> None:
    """The reference loaders call their torchvision transform once per frame: a clip's frames get their own
    crops and flips. Four copies of one asymmetric image per clip: per frame they come out different."""
    image = torch.arange(16 * 16 * 3, dtype=torch.float32).reshape(16, 16, 3) % 251
    frames = image.to(torch.uint8).expand(8, 4, 16, 16, 3).contiguous()
    per_frame = visual_inputs(frames, 4, torch.Generator().manual_seed(0), Augment(kind))
    distinct = [len({tuple(f.flatten().tolist()) for f in clip}) for clip in per_frame]
    assert max(distinct) > 1
    shared = visual_inputs(frames, 4, torch.Generator().manual_seed(0), Augment(kind, scope="clip"))
    assert all(torch.equal(clip[0], clip[t]) for clip in shared for t in range(4))
    assert SHIPPED["train"]["frame_augment_scope"] == "frame"


def test_kinetics_sounds_keeps_three_frames_per_clip() -> None:
    """OGM-GE dataset/dataset.py (pick_num = 3) and BalanceBenchmark KS_dataset.py: 3 frames per clip."""
    assert SHIPPED["extract"]["kinetics_sounds"]["num_frames"] == 3
    for protocol in ("ogm_ge_cvpr2022", "balancebenchmark"):
        params = load_params(ROOT / "params.yaml", ROOT / f"config/protocols/{protocol}.yaml")
        assert params["extract"]["kinetics_sounds"]["num_frames"] == 3
        assert params["train"]["frames_per_sample"] == params["train"]["eval_frames"] == "all"
