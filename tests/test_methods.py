"""Golden tests: each training method's core formula against values computed by hand from the reference
formula (the authors' released code, docs/methods.md), on tiny tensors, and the gradients it changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avbias.methods import create_method
from avbias.methods.gblending import blending_weights
from avbias.methods.mla import update_projector
from avbias.methods.mmpareto import combine, pareto_weights
from avbias.methods.ogm_ge import ogm_ge_coefficients
from avbias.methods.pmr import class_prototypes, pmr_coefficient, pmr_loss_terms, prototype_logits
from avbias.models.fusion import AVClassifier, uncertainty_weights

HPARAMS = {"ogm_ge": {"alpha": 0.8, "modulation_starts": 0, "modulation_ends": 50, "generalisation_enhancement": False},
           "mmpareto": {"gamma": 1.5}}
# OGM-GE's k = 1 - tanh(alpha rho) at alpha 0.8 (Eq. 10 and main.py), computed by hand to 4 digits.
OGM_GE_GOLDEN = {1.01: 0.3315, 1.2: 0.2557, 1.5: 0.1663, 2.0: 0.0783, 3.0: 0.0163}


def batch(seed: int = 0, n: int = 6) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = {"audio": torch.randn(n, 1, 16, 12, generator=g), "visual": torch.randn(n, 1, 3, 16, 16, generator=g)}
    return inputs, torch.arange(n) % 3


@pytest.mark.parametrize(("rho", "k"), OGM_GE_GOLDEN.items())
def test_ogm_ge_coefficient_golden_values(rho: float, k: float) -> None:
    audio_dominant = ogm_ge_coefficients({"audio": rho, "visual": 1.0}, alpha=0.8)
    assert audio_dominant == {"audio": pytest.approx(k, abs=5e-5), "visual": 1.0}
    visual_dominant = ogm_ge_coefficients({"audio": 2.0, "visual": 2.0 * rho}, alpha=0.8)
    assert visual_dominant == {"audio": 1.0, "visual": pytest.approx(k, abs=5e-5)}


def test_ogm_ge_coefficient_jumps_at_one_and_shifted_ablation_does_not() -> None:
    # The code's else-branch: a tie modulates audio by 1 - tanh(0.8) = 0.3360 (no modality keeps k = 1 below).
    assert ogm_ge_coefficients({"audio": 1.0, "visual": 1.0}, 0.8) == {"audio": pytest.approx(0.33596, abs=5e-5),
                                                                        "visual": 1.0}
    shifted = ogm_ge_coefficients({"audio": 1.01, "visual": 1.0}, 0.8, coefficient="shifted")
    assert shifted == {"audio": pytest.approx(1 - math.tanh(0.8 * 0.01)), "visual": 1.0}      # 0.9920, no jump
    assert ogm_ge_coefficients({"audio": 1.0, "visual": 1.0}, 0.8, coefficient="shifted")["audio"] == 1.0


def test_ogm_ge_scales_the_dominant_encoders_conv_gradients_only() -> None:
    torch.manual_seed(0)
    model = AVClassifier(("audio", "visual"), 3, width=8)
    inputs, labels = batch()
    out = model(inputs)
    F.cross_entropy(out.logits, labels).backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    method = create_method("ogm_ge", {"methods": HPARAMS})
    logs = method.after_backward(model, out, labels, epoch=0)
    scores = {m: float(out.modality_logits[m].detach().softmax(1)[torch.arange(6), labels].sum())
              for m in ("audio", "visual")}
    expected = ogm_ge_coefficients(scores, 0.8)
    assert logs["coeff_audio"] == pytest.approx(expected["audio"]) and min(expected.values()) < 1
    for name, p in model.named_parameters():
        modality = name.split(".")[1] if name.startswith("encoders.") else None
        coeff = expected[modality] if modality and p.dim() == 4 else 1.0
        torch.testing.assert_close(p.grad, plain[name] * coeff)
    # Outside the modulation window nothing changes.
    model.zero_grad()
    F.cross_entropy(model(inputs).logits, labels).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    method.after_backward(model, model(inputs), labels, epoch=51)
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())


def test_gblending_weights_by_hand() -> None:
    w = blending_weights(train_start={"fused": 1.0, "audio": 1.0, "visual": 1.0},
                         val_start={"fused": 1.2, "audio": 1.2, "visual": 1.2},
                         train_end={"fused": 0.5, "audio": 0.6, "visual": 0.9},
                         val_end={"fused": 1.0, "audio": 0.9, "visual": 1.3})
    # fused: dG 0.2, dO 0.3 -> 2.222; audio: dG 0.3, dO 0.1 -> 30; visual: no generalisation gain -> 0.
    raw = {"fused": 0.2 / 0.09, "audio": 0.3 / 0.01, "visual": 0.0}
    assert w == {k: pytest.approx(v / sum(raw.values()), rel=1e-5) for k, v in raw.items()}
    flat = {"fused": 1.0, "audio": 1.0, "visual": 1.0}
    assert blending_weights(flat, flat, flat, flat) == {k: pytest.approx(1 / 3) for k in flat}


def test_pmr_prototypes_and_loss_terms_by_hand() -> None:
    features = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]], np.float32)
    protos = class_prototypes(features, np.array([0, 0, 1, 1]), 3)
    np.testing.assert_allclose(protos, [[1, 0], [0, 5], [0, 0]])
    labels = torch.tensor([0, 1])
    proto = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    strong = prototype_logits(torch.tensor([[1.0, 0.0], [0.0, 5.0]]), proto)     # on the prototypes
    weak = prototype_logits(torch.tensor([[0.5, 2.5], [0.5, 2.5]]), proto)       # half-way
    torch.testing.assert_close(strong, torch.tensor([[0.0, -math.sqrt(26)], [-math.sqrt(26), 0.0]]))
    # The authors' code: the weak modality's prototype loss switched fully on (weight alpha), the dominant's off.
    dominant, weak_name, beta, pce, entropy = pmr_loss_terms({"audio": strong, "visual": weak}, labels, alpha=2.0)
    assert (dominant, weak_name, beta) == ("audio", "visual", 2.0)
    assert float(pce) == pytest.approx(math.log(2))
    p = 1 / (1 + math.exp(-math.sqrt(26)))
    assert float(entropy) == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), rel=1e-4)
    # Swapped roles: visual dominant, audio weak.
    assert pmr_loss_terms({"audio": weak, "visual": strong}, labels, alpha=2.0)[:3] == ("visual", "audio", 2.0)
    # The paper's continuous coefficient: alpha tanh(rho - 1), rho = s_strong / s_weak (weak scores 0.5 + 0.5).
    s_strong = 2 / (1 + math.exp(-math.sqrt(26)))
    paper = pmr_loss_terms({"audio": strong, "visual": weak}, labels, alpha=2.0, weighting="continuous")[2]
    assert paper == pytest.approx(2.0 * math.tanh(s_strong - 1))


@pytest.mark.parametrize(("rho", "switch", "continuous"), [(1.0, 0.0, 0.0), (1.2, 0.6, 0.6 * math.tanh(0.2)),
                                                            (3.0, 0.6, 0.6 * math.tanh(2.0))])
def test_pmr_coefficient_switches_where_the_paper_is_continuous(rho: float, switch: float, continuous: float) -> None:
    assert pmr_coefficient(rho, 0.6) == pytest.approx(switch)          # tie: both prototype losses off
    assert pmr_coefficient(rho, 0.6, "continuous") == pytest.approx(continuous)


def test_mmpareto_weights_and_rescaling_by_hand() -> None:
    assert pareto_weights(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == (0.5, 0.5)       # no conflict
    g_mm, g_uni = torch.tensor([1.0, 0.0]), torch.tensor([-0.5, 1.0])                             # conflict
    k = pareto_weights(g_mm, g_uni)
    assert k[0] == pytest.approx(1.75 / 3.25) and k[1] == pytest.approx(1 - 1.75 / 3.25)
    d = k[0] * g_mm + k[1] * g_uni
    assert float(torch.dot(d, g_mm - g_uni)) == pytest.approx(0, abs=1e-6)                         # min-norm point
    new = combine(g_mm, g_uni, k, gamma=1.5)
    # 2 d has norm 1.109 < |g_mm + g_uni| = 1.118, so it is stretched to 1.118, then times 1.5.
    torch.testing.assert_close(new, 2 * d / torch.linalg.vector_norm(2 * d) * math.sqrt(1.25) * 1.5)
    big = combine(torch.tensor([2.0, 0.0]), torch.tensor([2.0, 0.0]), (0.5, 0.5), gamma=1.0)
    torch.testing.assert_close(big, torch.tensor([4.0, 0.0]))                                       # not shrunk


def test_mmpareto_sets_encoder_gradients_to_the_combination() -> None:
    torch.manual_seed(1)
    model = AVClassifier(("audio", "visual"), 3, width=8, aux_heads=True)
    method = create_method("mmpareto", {"methods": HPARAMS})
    inputs, labels = batch(1)
    out = model(inputs)
    loss = method.loss(out, labels, 0)
    enc = list(model.encoders["audio"].parameters())
    g_mm = torch.autograd.grad(F.cross_entropy(out.logits, labels), enc, retain_graph=True)
    g_uni = torch.autograd.grad(F.cross_entropy(out.aux_logits["audio"], labels), enc, retain_graph=True)
    logs = method.backward(model, out, labels, 0, loss)
    k = pareto_weights(torch.cat([g.flatten() for g in g_mm]), torch.cat([g.flatten() for g in g_uni]))
    assert logs["k_mm_audio"] == pytest.approx(k[0])
    for p, a, b in zip(enc, g_mm, g_uni, strict=True):
        torch.testing.assert_close(p.grad, combine(a, b, k, 1.5), rtol=1e-4, atol=1e-6)


def test_mla_projector_and_uncertainty_fusion_by_hand() -> None:
    x = torch.tensor([3.0, 4.0])
    p = update_projector(torch.eye(2), x, alpha=1.0)
    torch.testing.assert_close(p @ x, x / 26)                                # alpha x / (alpha + |x|^2)
    orth = torch.tensor([4.0, -3.0])
    torch.testing.assert_close(p @ orth, orth)                                 # orthogonal inputs untouched
    # Per-sample entropy weights (paper, BalanceBenchmark): a = [2, 0.5, 0.1], v = [0.3, 0.2, 0.1].
    a, v = torch.tensor([[2.0, 0.5, 0.1]]), torch.tensor([[0.3, 0.2, 0.1]])
    torch.testing.assert_close(uncertainty_weights([a, v])[0], torch.tensor([0.5811906, 0.4188094]))
    # The released code's batch form: one entropy per modality, softmax over the batch dimension.
    a = torch.tensor([[2.0, 0.5, 0.1], [0.0, 1.0, 0.2]])
    v = torch.tensor([[0.3, 0.2, 0.1], [0.1, 0.2, 0.3]])
    w = uncertainty_weights([a, v], per_batch=True)
    torch.testing.assert_close(w, torch.tensor([[0.5864748, 0.4135252]] * 2))
    method = create_method("mla", {})
    assert method.step_modalities(0) == (("audio",), ("visual",))              # both steps on every batch
    assert (method.hp.projection, method.hp.test_fusion, method.fusion) == ("none", "batch_entropy", "shared")
    alternate = create_method("mla", {"methods": {"mla": {"schedule": "alternate"}}})
    assert [alternate.step_modalities(s) for s in range(2)] == [(("audio",),), (("visual",),)]


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated", "shared"])
def test_fusion_heads(fusion: str) -> None:
    torch.manual_seed(0)
    model = AVClassifier(("audio", "visual"), 3, width=8, fusion=fusion).eval()
    out = model(batch()[0])
    assert out.logits.shape == (6, 3) and set(out.modality_logits) == {"audio", "visual"}
    total = out.modality_logits["audio"] + out.modality_logits["visual"]
    assert torch.allclose(total, out.logits, atol=1e-5) == model.head.additive
    weights = model.head.decision_weights()
    assert (weights is None) == (fusion in ("film", "gated"))


def test_visual_frames_are_all_seen_and_mean_pooled() -> None:
    """Kinetics-Sounds in the OGM-GE code: 3 frames per clip, encoded one by one, average-pooled over time."""
    from avbias.train.loader import Augment, visual_inputs

    frames = torch.randint(0, 255, (2, 3, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = visual_inputs(frames, 3, None, Augment("none", (0.08, 1.0)))
    assert x.shape == (2, 3, 3, 16, 16)                                        # (B, T = 3 frames, C, H, W)
    torch.manual_seed(0)
    model = AVClassifier(("visual",), 3, width=8).eval()
    encoder = model.encoders["visual"]
    per_frame = torch.stack([encoder.net(x[:, t]) for t in range(3)], 1)
    torch.testing.assert_close(encoder(x), per_frame.mean(1))
    encoder.frame_pooling = "max"
    torch.testing.assert_close(encoder(x), per_frame.amax(1))
    # Training on fixed frames (OGM-GE) gives the centred window; a random window may differ.
    g = torch.Generator().manual_seed(0)
    fixed = visual_inputs(frames, 1, g, Augment("none", (0.08, 1.0)), random_window=False)
    torch.testing.assert_close(fixed, visual_inputs(frames, 1, None, Augment("none", (0.08, 1.0))))


def test_head_init_follows_the_ogm_ge_code() -> None:
    torch.manual_seed(0)
    model = AVClassifier(("audio", "visual"), 6, width=8)
    assert torch.count_nonzero(model.head.fc.bias) == 0                        # zero bias (weight_init)
    fan_in, fan_out = model.head.fc.weight.shape[1], model.head.fc.weight.shape[0]
    assert float(model.head.fc.weight.detach().std()) == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.15)
    torch.manual_seed(0)
    assert torch.count_nonzero(AVClassifier(("audio", "visual"), 6, width=8, head_init="default").head.fc.bias) == 6
