"""Golden tests for the training methods' hooks (methods/*.py): each expected gradient, loss or weight is
computed by hand here from the authors' code (docs/methods.md), so that a one-token change (a sign, a
window bound, noise drawn after scaling, a dropped re-estimate) fails a test. `make mutation` runs them
against every such change (docs/benchmarks.md, "Mutation testing")."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from avbias.errors import ParamsError
from avbias.methods import create_method
from avbias.methods.gblending import blending_weights, head_losses
from avbias.methods.ogm_ge import modulate_gradients, ogm_ge_coefficients
from avbias.methods.pmr import class_prototypes, pmr_loss_terms, prototype_logits
from avbias.models.fusion import AVClassifier
from avbias.train.loop import Trainer

ROOT = Path(__file__).parents[1]
SHIPPED = yaml.safe_load((ROOT / "params.yaml").read_text())


def tiny_params(methods: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": SHIPPED["model"] | {"width": 8},
            "train": SHIPPED["train"] | {"epochs": 1, "batch_size": 8, "lr": 0.05, "frames_per_sample": 1,
                                         "device": "cpu", "frame_window": "random"},
            "methods": methods or {}}


def av_batch(n: int = 6, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = {"audio": torch.randn(n, 1, 16, 12, generator=g), "visual": torch.randn(n, 1, 3, 16, 16, generator=g)}
    return inputs, torch.arange(n) % 3


def backward_once(fusion: str = "concat", aux: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    model = AVClassifier(("audio", "visual"), 3, width=8, fusion=fusion, aux_heads=aux)
    inputs, labels = av_batch()
    out = model(inputs)
    F.cross_entropy(out.logits, labels).backward()
    return model, out, labels


def scores_by_hand(out, labels: torch.Tensor) -> dict[str, float]:
    return {m: float(sum(torch.softmax(out.modality_logits[m][i].detach(), 0)[labels[i]] for i in range(len(labels))))
            for m in ("audio", "visual")}


# --- OGM-GE ----------------------------------------------------------------------------------------------------


def test_ogm_ge_noise_has_the_unscaled_gradients_std_on_both_encoders() -> None:
    """main.py: parms.grad = parms.grad * coeff + zeros_like(grad).normal_(0, parms.grad.std() + 1e-8): the
    std is the gradient's before scaling, and both encoders get noise (audio first, then visual)."""
    model, out, labels = backward_once()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    method = create_method("ogm_ge", {"methods": {"ogm_ge": {"alpha": 0.8}}})
    coeffs = ogm_ge_coefficients(scores_by_hand(out, labels), 0.8)
    assert min(coeffs.values()) < 1
    torch.manual_seed(7)
    logs = method.after_backward(model, out, labels, epoch=3)
    torch.manual_seed(7)
    for m in ("audio", "visual"):
        for name, p in model.encoders[m].named_parameters():
            g = plain[f"encoders.{m}.{name}"]
            if g.dim() != 4:
                torch.testing.assert_close(p.grad, g)
                continue
            expected = g * coeffs[m] + torch.randn_like(g) * (g.std() + 1e-8)
            torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        if not name.startswith("encoders."):
            torch.testing.assert_close(p.grad, plain[name])
    s = scores_by_hand(out, labels)
    assert logs == {"coeff_audio": pytest.approx(coeffs["audio"]), "coeff_visual": pytest.approx(coeffs["visual"]),
                    "ratio_a_v": pytest.approx(s["audio"] / s["visual"])}


@pytest.mark.parametrize(("epoch", "inside"), [(1, False), (2, True), (4, True), (5, False)])
def test_ogm_ge_window_includes_both_ends(epoch: int, inside: bool) -> None:
    """main.py: `if args.modulation_starts <= epoch <= args.modulation_ends`."""
    model, out, labels = backward_once()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    method = create_method("ogm_ge", {"methods": {"ogm_ge": {"modulation_starts": 2, "modulation_ends": 4,
                                                            "generalisation_enhancement": False}}})
    logs = method.after_backward(model, out, labels, epoch=epoch)
    coeffs = ogm_ge_coefficients(scores_by_hand(out, labels), 0.8)
    assert logs["coeff_audio"] == pytest.approx(coeffs["audio"])          # logged inside and outside
    for name, p in model.named_parameters():
        m = name.split(".")[1] if name.startswith("encoders.") else None
        scale = coeffs[m] if inside and m and p.dim() == 4 else 1.0
        torch.testing.assert_close(p.grad, plain[name] * scale)


def test_ogm_ge_shifted_coefficient_reaches_the_gradients() -> None:
    model, out, labels = backward_once()
    method = create_method("ogm_ge", {"methods": {"ogm_ge": {"coefficient": "shifted", "alpha": 0.5,
                                                            "generalisation_enhancement": False}}})
    logs = method.after_backward(model, out, labels, epoch=0)
    assert logs == {f"coeff_{m}": pytest.approx(c) for m, c in
                    ogm_ge_coefficients(scores_by_hand(out, labels), 0.5, "shifted").items()} | {"ratio_a_v": logs[
                        "ratio_a_v"]}
    assert logs != {f"coeff_{m}": pytest.approx(c) for m, c in
                    ogm_ge_coefficients(scores_by_hand(out, labels), 0.5).items()} | {"ratio_a_v": logs["ratio_a_v"]}


def test_modulate_gradients_skips_parameters_without_gradients() -> None:
    model, _, _ = backward_once()
    conv = [p for p in model.encoders["audio"].parameters() if p.dim() == 4]
    conv[0].grad = None
    before = conv[1].grad.clone()
    modulate_gradients(model, {"audio": 0.5, "visual": 1.0}, noise=False)
    assert conv[0].grad is None
    torch.testing.assert_close(conv[1].grad, before * 0.5)


# --- G-Blending ------------------------------------------------------------------------------------------------


def test_blending_weights_when_overfitting_does_not_change() -> None:
    same = {"fused": 1.0, "audio": 1.0, "visual": 1.0}
    # fused: dG 0.5, dO 0 -> 0.5 / 1e-8; audio: dG 0.1, dO 0.5 -> 0.4; visual: no gain.
    w = blending_weights(same, {"fused": 2.0, "audio": 2.0, "visual": 2.0}, {"fused": 0.5, "audio": 0.4, "visual": 1.0},
                         {"fused": 1.5, "audio": 1.9, "visual": 2.5})
    assert w == {"fused": pytest.approx(0.5e8 / (0.5e8 + 0.4)), "audio": pytest.approx(0.4 / (0.5e8 + 0.4), rel=1e-6),
                 "visual": 0.0}
    # Raw weights summing to under 1 are still normalised: audio dG 0.1, dO 0.9 -> 0.1 / 0.81.
    w = blending_weights(same, {"fused": 2.0, "audio": 2.0, "visual": 2.0}, {"fused": 1.0, "audio": 0.0, "visual": 1.0},
                         {"fused": 2.0, "audio": 1.9, "visual": 2.5})
    assert w == {"fused": 0.0, "audio": pytest.approx(1.0), "visual": 0.0}


def ce_by_hand(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean([math.log(np.exp(row).sum()) - row[y] for row, y in zip(logits, labels, strict=True)]))


def test_head_losses_by_hand() -> None:
    rng = np.random.default_rng(0)
    pred = {"labels": np.array([0, 2, 1, 1]), "logits": rng.normal(size=(4, 3)).astype(np.float32)}
    for prefix in ("aux_logits", "logits"):
        for m in ("audio", "visual"):
            pred[f"{prefix}_{m}"] = rng.normal(size=(4, 3)).astype(np.float32)
    for prefix in ("aux_logits", "logits"):
        assert head_losses(pred, prefix) == {
            "fused": pytest.approx(ce_by_hand(pred["logits"], pred["labels"]), rel=1e-5),
            "audio": pytest.approx(ce_by_hand(pred[f"{prefix}_audio"], pred["labels"]), rel=1e-5),
            "visual": pytest.approx(ce_by_hand(pred[f"{prefix}_visual"], pred["labels"]), rel=1e-5)}
    assert head_losses(pred) == head_losses(pred, "aux_logits")


@pytest.mark.parametrize(("heads", "aux", "prefix"), [("separate", True, "aux_logits"),
                                                     ("fusion_blocks", False, "logits")])
def test_gblending_state_and_weighted_loss_by_hand(heads: str, aux: bool, prefix: str) -> None:
    method = create_method("gblending", {"methods": {"gblending": {"unimodal_heads": heads}}})
    assert (method.aux_heads, method.unimodal, method.last_losses) == (aux, prefix, None)
    assert method.weights == {"fused": pytest.approx(1 / 3), "audio": pytest.approx(1 / 3),
                              "visual": pytest.approx(1 / 3)}
    model, out, labels = backward_once(aux=aux)
    method.weights = {"fused": 0.5, "audio": 0.3, "visual": 0.2}
    uni = out.aux_logits if aux else out.modality_logits
    expected = (0.5 * ce_by_hand(out.logits.detach().numpy(), labels.numpy())
                + 0.3 * ce_by_hand(uni["audio"].detach().numpy(), labels.numpy())
                + 0.2 * ce_by_hand(uni["visual"].detach().numpy(), labels.numpy()))
    assert float(method.loss(out, labels, 0).detach()) == pytest.approx(expected, rel=1e-5)


def test_gblending_re_estimates_its_weights_every_super_epoch(features: Path) -> None:
    """Online G-Blend: losses on train and val at epochs 0, n, 2n, ...; weights from consecutive estimates."""
    params = tiny_params({"gblending": {"super_epoch": 2}})
    trainer = Trainer(create_method("gblending", params), features, params, seed=0, pretrained=[])
    method, model = trainer.method, trainer.model
    method.setup(model, trainer)

    def losses_by_hand() -> tuple[dict[str, float], ...]:
        out = []
        for split in ("train", "val"):
            pred = trainer.predict(split)
            out.append({"fused": ce_by_hand(pred["logits"], pred["labels"]),
                        **{m: ce_by_hand(pred[f"aux_logits_{m}"], pred["labels"]) for m in ("audio", "visual")}})
        return tuple(out)

    start = losses_by_hand()
    assert method.epoch_start(model, 0, trainer) == {f"weight_{k}": pytest.approx(1 / 3) for k in
                                                     ("fused", "audio", "visual")}
    assert method.last_losses[0] == pytest.approx(start[0], rel=1e-5)
    assert method.last_losses[1] == pytest.approx(start[1], rel=1e-5)
    with torch.no_grad():                       # "training": every head moves
        for p in model.parameters():
            p.mul_(0.5)
    method.epoch_start(model, 1, trainer)       # not a super-epoch boundary: nothing re-estimated
    assert method.last_losses[0] == pytest.approx(start[0], rel=1e-5)
    end = losses_by_hand()
    logs = method.epoch_start(model, 2, trainer)
    expected = blending_weights(*start, *end)
    assert logs == {f"weight_{k}": pytest.approx(w, rel=1e-4, abs=1e-9) for k, w in expected.items()}
    assert method.weights == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert logs != {f"weight_{k}": pytest.approx(1 / 3) for k in ("fused", "audio", "visual")}
    assert method.last_losses[1] == pytest.approx(end[1], rel=1e-5)


def test_gblending_needs_a_validation_split(features: Path, tmp_path: Path) -> None:
    import shutil

    from avbias.shards import MANIFEST

    no_val = tmp_path / "features"
    shutil.copytree(features, no_val)
    manifest = pd.read_parquet(no_val / MANIFEST)
    manifest["split"] = manifest["split"].replace({"val": "train"})
    manifest.to_parquet(no_val / MANIFEST, index=False)
    params = tiny_params()
    with pytest.raises(ParamsError, match="gblending estimates its weights on held-out data"):
        Trainer(create_method("gblending", params), no_val, params, seed=0, pretrained=[])


# --- adaptive fusion, baseline, unimodal, pretrain-then-fuse ---------------------------------------------------


def test_adaptive_fusion_loss_and_logged_allocation_by_hand() -> None:
    method = create_method("adaptive_fusion", {"methods": {"adaptive_fusion": {"branch_weight": 0.7}}})
    model, out, labels = backward_once(fusion=method.fusion)
    with torch.no_grad():
        model.head.theta.copy_(torch.tensor([[0.5, -0.5], [0.0, 1.0], [2.0, 0.0]]))
    method.setup(model, None)
    out = model(av_batch()[0])
    w, b = model.head.fc.weight.detach(), model.head.fc.bias.detach()
    fa, fv = out.features["audio"].detach(), out.features["visual"].detach()
    da = fa.shape[1]
    branch = {"audio": fa @ w[:, :da].T + b / 2, "visual": fv @ w[:, da:].T + b / 2}
    y = labels.numpy()
    expected = ce_by_hand(out.logits.detach().numpy(), y) + 0.7 * sum(ce_by_hand(z.numpy(), y) for z in branch.values())
    assert float(method.loss(out, labels, 0).detach()) == pytest.approx(expected, rel=1e-5)
    theta = np.array([[0.5, -0.5], [0.0, 1.0], [2.0, 0.0]])
    alpha = 2 * np.exp(theta) / np.exp(theta).sum(1, keepdims=True)
    logs = method.after_backward(model, out, labels, 0)
    assert logs == {"alpha_audio": pytest.approx(alpha[:, 0].mean()), "alpha_visual": pytest.approx(alpha[:, 1].mean())}


@pytest.mark.parametrize(("name", "fusion"), [("baseline", None), ("baseline_sum", "sum"), ("baseline_film", "film"),
                                              ("baseline_gated", "gated")])
def test_baselines_carry_their_fusion(name: str, fusion: str | None) -> None:
    method = create_method(name, {"methods": {}}, "synth_cremad")
    assert (method.name, method.fusion, method.modalities, method.params) == (name, fusion, ("audio", "visual"),
                                                                               {"methods": {}})


@pytest.mark.parametrize(("name", "modalities"), [("unimodal_audio", ("audio",)), ("unimodal_visual", ("visual",))])
def test_unimodal_methods_train_one_modality(name: str, modalities: tuple[str, ...]) -> None:
    method = create_method(name, {"methods": {}}, "synth_cremad")
    assert (method.name, method.modalities, method.params) == (name, modalities, {"methods": {}})


@pytest.mark.parametrize(("name", "frozen"), [("pretrain_finetune", False), ("linear_probe", True)])
def test_pretrain_then_fuse_variants(name: str, frozen: bool) -> None:
    method = create_method(name, {"methods": {}}, "synth_cremad")
    assert (method.name, method.freeze_encoders, method.params) == (name, frozen, {"methods": {}})
    assert method.pretrained == ("unimodal_audio", "unimodal_visual")


@pytest.mark.parametrize("name", ["baseline", "unimodal_audio", "pretrain_finetune"])
def test_by_dataset_overrides_reach_methods_without_hyperparameters(name: str) -> None:
    """The dataset is passed on: an override for it is applied (and, naming no field, rejected)."""
    params = {"methods": {name: {"by_dataset": {"synth_cremad": {"not_a_field": 1}}}}}
    create_method(name, params, "kinetics_sounds")
    with pytest.raises(TypeError):
        create_method(name, params, "synth_cremad")


# --- PMR -------------------------------------------------------------------------------------------------------


def pmr_batch(method: Any) -> tuple[Any, Any, torch.Tensor, dict, dict[str, float], str, str]:
    """One backward batch with PMR's prototypes set from its features: the model, its output, the labels, each
    modality's prototype logits (negative distances), their summed true-class softmax, dominant and weak."""
    model, out, labels = backward_once()
    feats = {m: out.features[m].detach() for m in ("audio", "visual")}
    method.prototypes = {m: torch.from_numpy(class_prototypes(feats[m].numpy() * 0.5 + 0.1, labels.numpy(), 3))
                         for m in feats}
    proto = {m: -torch.cdist(feats[m], method.prototypes[m]) for m in feats}
    s = {m: float(torch.softmax(proto[m], 1)[torch.arange(6), labels].sum()) for m in feats}
    dominant, weak = sorted(s, key=s.get, reverse=True)
    return model, out, labels, proto, s, dominant, weak


@pytest.mark.parametrize(("epoch", "inside"), [(0, False), (1, True), (3, True), (4, False)])
def test_pmr_loss_adds_the_weak_prototype_loss_inside_the_window(epoch: int, inside: bool) -> None:
    """The authors' code: loss = CE(fused) + alpha * PCE(weak) inside the window (the dominant's prototype loss
    switched off); with the paper's mu, minus mu times the dominant's prototype entropy."""
    method = create_method("pmr", {"methods": {"pmr": {"alpha": 1.5, "mu": 0.25, "modulation_starts": 1,
                                                       "modulation_ends": 3}}})
    model, out, labels, proto, s, dominant, weak = pmr_batch(method)
    y = labels.numpy()
    p = torch.softmax(proto[dominant], 1).numpy()
    entropy = float(-(p * np.log(p)).sum(1).mean())
    ce = ce_by_hand(out.logits.detach().numpy(), y)
    expected = ce + (1.5 * ce_by_hand(proto[weak].numpy(), y) - 0.25 * entropy if inside else 0.0)
    assert float(method.loss(out, labels, epoch).detach()) == pytest.approx(expected, rel=1e-5)
    assert method.after_backward(model, out, labels, epoch) == {"beta": 1.5,
                                                                "dominant_is_audio": float(dominant == "audio")}


def test_prototype_logits_are_negative_distances() -> None:
    z = prototype_logits(torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64), torch.tensor([[0.0, 4.0]]))
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, torch.tensor([[-4.0], [-3.0]]))


def test_pmr_prototypes_with_momentum_by_hand(features: Path) -> None:
    """Each epoch: fresh class means; from `momentum_starts` on, (1 - m) fresh + m previous."""
    params = tiny_params({"pmr": {"prototype_fraction": 1.0, "prototype_inputs": "eval", "momentum": 0.3,
                                  "momentum_starts": 1}})
    trainer = Trainer(create_method("pmr", params), features, params, seed=0, pretrained=[])
    method = trainer.method
    pred = trainer.predict("train")
    fresh = {m: class_prototypes(pred[f"features_{m}"], pred["labels"], 6) for m in ("audio", "visual")}
    assert method.epoch_start(trainer.model, 0, trainer) == {}
    for m in fresh:
        np.testing.assert_allclose(method.prototypes[m].numpy(), fresh[m], rtol=1e-5, atol=1e-6)
    old = {m: fresh[m] + 1.0 for m in fresh}
    method.prototypes = {m: torch.from_numpy(v) for m, v in old.items()}
    method.epoch_start(trainer.model, 1, trainer)
    for m in fresh:
        np.testing.assert_allclose(method.prototypes[m].numpy(), 0.7 * fresh[m] + 0.3 * old[m], rtol=1e-5, atol=1e-6)


# --- the registry ----------------------------------------------------------------------------------------------


def test_register_refuses_a_second_method_of_one_name() -> None:
    from avbias.methods.registry import METHODS, Method, register

    with pytest.raises(ValueError, match="method 'baseline' registered twice"):
        register("baseline")(Method)
    assert METHODS["baseline"].spec.__name__ == "Baseline"


def test_register_binds_name_params_dataset_and_fixed_arguments() -> None:
    from avbias.methods.registry import METHODS, Method, register

    class Probe(Method):
        def __init__(self, name: str, params: dict[str, Any], dataset: str | None, tag: str) -> None:
            super().__init__(name, params, dataset)
            self.seen = (name, params, dataset, tag)

    params = {"methods": {}}
    try:
        assert register("mutation_probe", tag="t")(Probe) is Probe
        assert METHODS["mutation_probe"].spec is Probe
        assert create_method("mutation_probe", params, "cremad").seen == ("mutation_probe", params, "cremad", "t")
        assert METHODS["mutation_probe"](params).seen == ("mutation_probe", params, None, "t")
    finally:
        METHODS.pop("mutation_probe", None)


def test_unknown_method_names_the_registered_ones() -> None:
    from avbias.methods.registry import METHODS, method_class

    with pytest.raises(ParamsError, match=r"unknown method 'nope'; registered: \['adaptive_fusion'") as err:
        method_class("nope")
    assert str(sorted(METHODS)) in str(err.value)
    with pytest.raises(ParamsError, match="unknown method 'nope'"):
        create_method("nope", {})


def test_overrides_most_specific_last() -> None:
    from avbias.methods.registry import method_overrides, resolve_hyperparams

    params = {"methods": {"ogm_ge": {"alpha": 0.5, "modulation_ends": 20,
                                     "by_dataset": {"cremad": {"alpha": 0.3, "modulation_starts": 1},
                                                    "synth_cremad": {"alpha": 0.1}}}}}
    assert method_overrides(params, "ogm_ge", None) == {"alpha": 0.5, "modulation_ends": 20}
    # synth_cremad is of the cremad family: the family first, then the dataset itself.
    assert method_overrides(params, "ogm_ge", "synth_cremad") == {"alpha": 0.1, "modulation_ends": 20,
                                                                  "modulation_starts": 1}
    assert method_overrides(params, "ogm_ge", "cremad") == {"alpha": 0.3, "modulation_ends": 20, "modulation_starts": 1}
    assert method_overrides(params, "ogm_ge", "kinetics_sounds") == {"alpha": 0.5, "modulation_ends": 20}
    assert method_overrides({}, "ogm_ge", "cremad") == {}
    assert method_overrides({"methods": {"ogm_ge": None}}, "ogm_ge", None) == {}
    assert params["methods"]["ogm_ge"]["by_dataset"]["cremad"] == {"alpha": 0.3, "modulation_starts": 1}   # untouched
    hp = resolve_hyperparams("ogm_ge", params, "synth_cremad")
    assert (hp.alpha, hp.modulation_starts, hp.modulation_ends) == (0.1, 1, 20)


@pytest.mark.parametrize(("block", "message"), [
    ({"alpha": "x"}, r"p: methods.ogm_ge.alpha: expected float, got 'x'"),
    ({"alpha": True}, r"methods.ogm_ge.alpha: expected float, got True"),
    ({"modulation_ends": 2.5}, r"methods.ogm_ge.modulation_ends: expected int, got 2.5"),
    ({"modulation_ends": False}, r"methods.ogm_ge.modulation_ends: expected int, got False"),
    ({"coefficient": "other"}, r"methods.ogm_ge.coefficient: expected 'code' \| 'shifted', got 'other'"),
    ({"generalisation_enhancement": 1}, r"methods.ogm_ge.generalisation_enhancement: expected bool, got 1"),
    ({"gamma": 1.0}, r"methods.ogm_ge.gamma: unknown hyperparameter; OGMGE.Hyperparams has \['alpha', 'coefficient'"),
    ({"by_dataset": {"nowhere": {}}}, r"methods.ogm_ge.by_dataset.nowhere: unknown dataset; known: \["),
    ({"by_dataset": {"cremad": {"alpha": "x"}}}, r"methods.ogm_ge.by_dataset.cremad.alpha: expected float"),
])
def test_check_method_params_messages(block: dict[str, Any], message: str) -> None:
    from avbias.methods.registry import check_method_params

    with pytest.raises(ParamsError, match=message):
        check_method_params({"methods": {"ogm_ge": block}, "run": {"methods": "all"}}, "p")


def test_check_method_params_accepts_good_values_and_checks_run_methods() -> None:
    from avbias.methods.registry import check_method_params

    good = {"ogm_ge": {"alpha": 1, "modulation_ends": 3, "coefficient": "shifted", "by_dataset": {
        "cremad": {"alpha": 0.5}, "kinetics_sounds": None, "synth_cremad": {"alpha": 0.2}}},
        "baseline": None, "mla": {"by_dataset": None}}
    check_method_params({"methods": good, "run": {"methods": ["ogm_ge", "mla"]}})
    check_method_params({"run": {"methods": "all"}})
    with pytest.raises(ParamsError, match=r"params: run.methods: unknown method 'nope'; registered: \["):
        check_method_params({"methods": {}, "run": {"methods": ["baseline", "nope"]}})
    with pytest.raises(ParamsError, match=r"^src: methods.nope: unknown method; registered: \["):
        check_method_params({"methods": {"nope": {}}, "run": {"methods": "all"}}, "src")
    with pytest.raises(ParamsError, match="has none"):
        check_method_params({"methods": {"baseline": {"x": 1}}, "run": {"methods": "all"}})


def test_shared_head_methods_need_equal_feature_sizes() -> None:
    from avbias.methods.registry import check_method_params

    cnn14 = {"model": {"pretrained": {"audio": "panns:cnn14"}}}
    with pytest.raises(ParamsError, match=r"p: run.methods: 'mla' shares one head across modalities, which needs "
                                          r"equal feature sizes; model.pretrained.audio panns:cnn14 gives 2048, "
                                          r"the visual ResNet18 512$"):
        check_method_params(cnn14 | {"run": {"methods": ["baseline", "mla"]}}, "p")
    with pytest.raises(ParamsError, match="'mla' shares one head"):
        check_method_params(cnn14 | {"run": {"methods": "all"}}, "p")
    check_method_params(cnn14 | {"run": {"methods": ["baseline", "ogm_ge"]}})
    check_method_params({"model": {"pretrained": {"visual": "torchvision:resnet18"}}, "run": {"methods": ["mla"]}})
    check_method_params({"model": {}, "run": {"methods": ["mla"]}})


def test_run_methods_and_run_params() -> None:
    from avbias.methods import METHODS, run_methods, run_params, run_params_json

    assert run_methods({"run": {"methods": "all"}}) == sorted(METHODS)
    assert run_methods({"run": {"methods": ("pmr", "baseline")}}) == ["pmr", "baseline"]
    params = {"model": {"width": 8}, "train": {"lr": 0.1}, "methods": {"unimodal_audio": {}, "pmr": {"by_dataset": {
        "cremad": {"alpha": 3.0}}}}}
    got = run_params(params, "pmr", "cremad")
    assert got["model"] == {"width": 8} and got["train"] == {"lr": 0.1} and list(got["methods"]) == ["pmr"]
    assert got["methods"]["pmr"]["alpha"] == 3.0 and got["methods"]["pmr"]["momentum"] == 0.2
    probe = run_params(params, "linear_probe", "cremad")["methods"]
    assert probe == {"linear_probe": {}, "unimodal_audio": {}, "unimodal_visual": {}}
    import json

    assert json.loads(run_params_json(params, "pmr", "cremad")) == json.loads(json.dumps(got))
    assert run_params_json(params, "pmr", "cremad") == json.dumps(got, sort_keys=True)


def test_method_defaults_by_hand() -> None:
    from avbias.methods.registry import Method, encoder_params, true_class_score

    method = create_method("baseline", {})
    assert method.epoch_start(None, 0, None) == {} and method.step_modalities(3) == (("audio", "visual"),)
    assert (method.aux_heads, method.freeze_encoders, method.pretrained, method.state_keys) == (False, False, (), ())
    assert method.in_window(0) and method.in_window(10**9) and not method.in_window(-1)
    model, out, labels = backward_once()
    assert float(method.loss(out, labels, 0).detach()) == pytest.approx(
        ce_by_hand(out.logits.detach().numpy(), labels.numpy()), rel=1e-5)
    model.zero_grad(set_to_none=True)
    out = model(av_batch()[0])
    logs = method.backward(model, out, labels, 0, method.loss(out, labels, 0))
    assert logs == {} and all(p.grad is not None for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    method.zero_grad(optimizer, 1)
    assert all(p.grad is None for p in model.parameters())
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert float(true_class_score(z, torch.tensor([0, 0]))) == pytest.approx(
        1 / (1 + math.exp(-2)) + 1 / (1 + math.exp(1)))
    model.encoders["audio"].net.stem[0].weight.requires_grad_(False)
    enc = encoder_params(model, "audio")
    assert len(enc) == len(list(model.encoders["audio"].parameters())) - 1 and all(p.requires_grad for p in enc)
    pmr = create_method("pmr", {})
    pmr.load_state({"prototypes": {"audio": 1}})
    assert pmr.state() == {"prototypes": {"audio": 1}}
    assert Method.__init__ is not None


# --- MMPareto and MLA ------------------------------------------------------------------------------------------


def test_mmpareto_heads_get_the_plain_sum_and_both_encoders_a_weight() -> None:
    from avbias.methods.mmpareto import pareto_weights

    torch.manual_seed(3)
    model = AVClassifier(("audio", "visual"), 3, width=8, aux_heads=True)
    method = create_method("mmpareto", {"methods": {"mmpareto": {"gamma": 2.0}}})
    inputs, labels = av_batch(seed=3)
    out = model(inputs)
    loss = method.loss(out, labels, 0)
    y = labels.numpy()
    expected = ce_by_hand(out.logits.detach().numpy(), y) + sum(
        ce_by_hand(out.aux_logits[m].detach().numpy(), y) for m in ("audio", "visual"))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    params = dict(model.named_parameters())
    mm = dict(zip(params, torch.autograd.grad(F.cross_entropy(out.logits, labels), list(params.values()),
                                              retain_graph=True, allow_unused=True), strict=True))
    uni_loss = sum(F.cross_entropy(out.aux_logits[m], labels) for m in ("audio", "visual"))
    uni = dict(zip(params, torch.autograd.grad(uni_loss, list(params.values()), retain_graph=True, allow_unused=True),
                   strict=True))
    logs = method.backward(model, out, labels, 0, loss)
    for name, p in params.items():
        a = mm[name] if mm[name] is not None else torch.zeros_like(p)
        b = uni[name] if uni[name] is not None else torch.zeros_like(p)
        if not name.startswith("encoders."):
            torch.testing.assert_close(p.grad, a + b, rtol=1e-5, atol=1e-7)
    for m in ("audio", "visual"):
        names = [n for n in params if n.startswith(f"encoders.{m}.")]
        k = pareto_weights(torch.cat([mm[n].flatten() for n in names]), torch.cat([uni[n].flatten() for n in names]))
        assert logs[f"k_mm_{m}"] == pytest.approx(k[0])
        for n in names:
            new = 2 * (k[0] * mm[n] + k[1] * uni[n])
            plain = torch.linalg.vector_norm(mm[n] + uni[n])
            norm = torch.linalg.vector_norm(new)
            scaled = new * (plain / norm) if plain > norm else new
            torch.testing.assert_close(params[n].grad, scaled * 2.0, rtol=1e-4, atol=1e-6)


def test_mla_owm_projects_the_head_gradient_on_the_other_modalitys_projector() -> None:
    """The paper's OWM: the head's weight gradient of modality m times P_other; P_m <- P - P x x^T P / (a + x^T P x)
    with x the step's mean feature of m."""
    torch.manual_seed(4)
    model = AVClassifier(("audio", "visual"), 3, width=8, fusion="shared")
    method = create_method("mla", {"methods": {"mla": {"projection": "owm", "owm_alpha": 0.5}}})
    inputs, labels = av_batch(seed=4)
    seen = []
    for (m,) in method.step_modalities(0):
        model.zero_grad(set_to_none=True)
        out = model({m: inputs[m]})
        loss = method.loss(out, labels, 0)
        assert float(loss.detach()) == pytest.approx(
            ce_by_hand(out.modality_logits[m].detach().numpy(), labels.numpy()), rel=1e-5)
        loss.backward()
        g = model.head.fc.weight.grad.double().clone()
        method.after_backward(model, out, labels, 0)
        seen.append((g, out.features[m].detach().double().mean(0), model.head.fc.weight.grad.double()))
    (g_a, x_a, after_a), (g_v, x_v, after_v) = seen
    torch.testing.assert_close(after_a, g_a)                         # P_visual = I before any visual step
    p_a = torch.eye(len(x_a), dtype=torch.float64) - torch.outer(x_a, x_a) / (0.5 + x_a @ x_a)
    torch.testing.assert_close(after_v, g_v @ p_a, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(method.projectors["audio"].double(), p_a, rtol=1e-4, atol=1e-6)
    p_v = torch.eye(len(x_v), dtype=torch.float64) - torch.outer(x_v, x_v) / (0.5 + x_v @ x_v)
    torch.testing.assert_close(method.projectors["visual"].double(), p_v, rtol=1e-4, atol=1e-6)
    assert method.step_count == 2
    plain = create_method("mla", {})
    plain.after_backward(model, out, labels, 0)
    assert plain.step_count == 1 and plain.projectors == {}


def test_mla_balancebenchmark_alpha_decays_over_the_epoch() -> None:
    """GSPlugin: alpha = 0.1^(1 + batch / batches); here batch 2 of 4: 0.1^1.5."""
    from avbias.methods.mla import update_projector_entrywise

    torch.manual_seed(5)
    model = AVClassifier(("audio", "visual"), 3, width=8, fusion="shared")
    method = create_method("mla", {"methods": {"mla": {"projection": "balancebenchmark"}}})
    method.batches = 4
    inputs, labels = av_batch(seed=5)
    method.step_modalities(1)
    method.step_count = 1
    method.step_modalities(2)
    model.zero_grad(set_to_none=True)
    out = model({"visual": inputs["visual"]})
    method.loss(out, labels, 0).backward()
    g = model.head.fc.weight.grad.clone()
    method.after_backward(model, out, labels, 0)
    x = out.features["visual"].detach().float().mean(0)
    p = update_projector_entrywise(torch.eye(len(x)), x, 0.1 ** 1.5)
    torch.testing.assert_close(model.head.fc.weight.grad, g + g @ p.T, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(method.projectors["shared"], p)


@pytest.mark.parametrize(("batch_size", "drop_last", "batches"), [(5, False, 7), (5, True, 6), (8, False, 4)])
def test_mla_counts_the_train_loaders_batches(features: Path, batch_size: int, drop_last: bool, batches: int) -> None:
    params = tiny_params({"mla": {"test_fusion": "fixed"}})
    params["train"] |= {"batch_size": batch_size, "drop_last": drop_last}
    trainer = Trainer(create_method("mla", params), features, params, seed=0, pretrained=[])
    assert trainer.method.batches == batches                          # 32 train clips
    assert trainer.model.head.test_fusion == "fixed"


# --- second pass (issue 21): the survivors of `mutmut run "avbias.methods*"` --------------------------------------


@pytest.mark.parametrize(("scores", "expected"), [
    # main.py: ratio_v = score_v / score_a; visual modulated when ratio_v > 1, else audio with rho = 1 / ratio_v.
    # k = 1 - tanh(0.8 rho) with rho 1.5: 1 - tanh(1.2) = 1 - 0.833655 = 0.166345.
    ({"audio": 3.0, "visual": 2.0}, {"audio": 0.166345, "visual": 1.0}),     # audio dominant, s_visual != 1
    ({"audio": 0.6, "visual": 0.4}, {"audio": 0.166345, "visual": 1.0}),     # scores below 1 (a small batch)
    ({"audio": 0.4, "visual": 0.6}, {"audio": 1.0, "visual": 0.166345}),
    # A zero score: the other modality's rho is huge (guarded by 1e-12, not a division by zero), k = 0.
    ({"audio": 0.0, "visual": 0.5}, {"audio": 1.0, "visual": 0.0}),
    ({"audio": 0.5, "visual": 0.0}, {"audio": 0.0, "visual": 1.0}),
])
def test_ogm_ge_coefficient_is_one_minus_tanh_of_the_score_ratio(scores: dict[str, float],
                                                                 expected: dict[str, float]) -> None:
    assert ogm_ge_coefficients(scores, 0.8) == {m: pytest.approx(k, abs=1e-6) for m, k in expected.items()}


def test_ogm_ge_noise_of_a_zero_gradient_has_std_1e_8() -> None:
    """main.py: normal_(0, grad.std() + 1e-8): a conv kernel whose gradient is all zeros still gets noise of std
    1e-8 (the epsilon, added, not subtracted)."""
    model, _, _ = backward_once()
    conv = [p for p in model.encoders["audio"].parameters() if p.dim() == 4]
    for p in conv:
        p.grad.zero_()
    torch.manual_seed(11)
    modulate_gradients(model, {"audio": 0.5}, noise=True)
    torch.manual_seed(11)
    for p in conv:
        torch.testing.assert_close(p.grad, torch.randn_like(p.grad) * 1e-8, rtol=1e-5, atol=0)


def test_ogm_ge_logs_the_audio_visual_score_ratio_when_scores_are_below_one() -> None:
    """Two samples, three classes: each score (a sum of two true-class probabilities) is below 1, and the
    logged ratio is still s_audio / s_visual."""
    torch.manual_seed(0)
    model = AVClassifier(("audio", "visual"), 3, width=8)
    inputs, labels = av_batch(n=2)
    out = model(inputs)
    F.cross_entropy(out.logits, labels).backward()
    s = scores_by_hand(out, labels)
    assert max(s.values()) < 1
    logs = create_method("ogm_ge", {}).after_backward(model, out, labels, epoch=100)
    assert logs["ratio_a_v"] == pytest.approx(s["audio"] / s["visual"], rel=1e-6)


def test_pmr_loss_terms_with_scores_below_one_by_hand() -> None:
    """Two samples: the strong modality's true-class probability is 3/4 on each (score 1.5), the weak one's 1/4
    (score 0.5 < 1), so rho = s_strong / s_weak = 3 (a product would give 0.75, a score floored at 1 gives 1.5).
    Paper: beta = alpha tanh(rho - 1) = 2 tanh(2); the code's switch: alpha. PCE(weak) = ln 4."""
    ln3 = math.log(3)
    strong = torch.tensor([[ln3, 0.0], [0.0, ln3]])
    weak = torch.tensor([[0.0, ln3], [ln3, 0.0]])
    labels = torch.tensor([0, 1])
    dominant, weak_name, beta, pce, entropy = pmr_loss_terms({"audio": weak, "visual": strong}, labels, 2.0,
                                                             "continuous")
    assert (dominant, weak_name) == ("visual", "audio")
    assert beta == pytest.approx(2.0 * math.tanh(2.0))
    assert float(pce) == pytest.approx(math.log(4))
    assert float(entropy) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel=1e-6)
    assert pmr_loss_terms({"audio": weak, "visual": strong}, labels, 2.0)[2] == 2.0


def test_pmr_method_passes_its_continuous_weighting_to_the_loss() -> None:
    """weighting: continuous reaches the training loss: beta = alpha tanh(rho - 1), not the code's switch."""
    method = create_method("pmr", {"methods": {"pmr": {"alpha": 1.5, "weighting": "continuous"}}})
    model, out, labels, proto, s, dominant, weak = pmr_batch(method)
    beta = 1.5 * math.tanh(s[dominant] / s[weak] - 1)
    assert 0 < beta < 1.4                                   # not the switch's 1.5
    y = labels.numpy()
    expected = ce_by_hand(out.logits.detach().numpy(), y) + beta * ce_by_hand(proto[weak].numpy(), y)
    assert float(method.loss(out, labels, 0).detach()) == pytest.approx(expected, rel=1e-5)
    assert method.after_backward(model, out, labels, 0)["beta"] == pytest.approx(beta, rel=1e-5)


def test_mmpareto_applies_by_dataset_overrides() -> None:
    params = {"methods": {"mmpareto": {"gamma": 1.0, "by_dataset": {"cremad": {"gamma": 3.0}}}}}
    assert create_method("mmpareto", params, "cremad").hp.gamma == 3.0
    assert create_method("mmpareto", params, "kinetics_sounds").hp.gamma == 1.0


def test_overrides_for_a_dataset_outside_the_registry_apply_its_own_block() -> None:
    """A dataset name the registry does not know has no family: only its own by_dataset block applies."""
    from avbias.methods.registry import method_overrides

    params = {"methods": {"pmr": {"alpha": 1.0, "by_dataset": {"my_corpus": {"alpha": 4.0}, "cremad": {"mu": 1.0}}}}}
    assert method_overrides(params, "pmr", "my_corpus") == {"alpha": 4.0}
    assert create_method("pmr", params, "not_registered").hp.alpha == 1.0


def test_method_backward_hands_model_output_labels_and_epoch_to_after_backward() -> None:
    """The default backward (loss.backward(), then after_backward) as OGM-GE uses it: the gradients are modulated
    inside the window (epoch 0) and the logs are after_backward's."""
    torch.manual_seed(0)
    model = AVClassifier(("audio", "visual"), 3, width=8)
    inputs, labels = av_batch()
    out = model(inputs)
    loss = F.cross_entropy(out.logits, labels)
    plain = dict(zip([n for n, _ in model.named_parameters()],
                     torch.autograd.grad(loss, list(model.parameters()), retain_graph=True), strict=True))
    method = create_method("ogm_ge", {"methods": {"ogm_ge": {"generalisation_enhancement": False,
                                                            "modulation_starts": 0, "modulation_ends": 0}}})
    logs = method.backward(model, out, labels, 0, loss)
    coeffs = ogm_ge_coefficients(scores_by_hand(out, labels), 0.8)
    assert logs["coeff_audio"] == pytest.approx(coeffs["audio"]) and min(coeffs.values()) < 1
    for name, p in model.named_parameters():
        m = name.split(".")[1] if name.startswith("encoders.") else None
        torch.testing.assert_close(p.grad, plain[name] * (coeffs[m] if m and p.dim() == 4 else 1.0))


def test_mmpareto_orthogonal_gradients_count_as_a_conflict() -> None:
    """MMPareto.py: equal weights only when cos > 0; at cos = 0 MinNormSolver decides. g_mm = (1, 0), g_uni = (0, 2):
    k = <g_uni - g_mm, g_uni> / |g_mm - g_uni|^2 = 4 / 5 (_min_norm_element_from2: -(0 - 4) / (1 + 4 - 0))."""
    from avbias.methods.mmpareto import pareto_weights

    k = pareto_weights(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    assert k == (pytest.approx(0.8), pytest.approx(0.2))


def test_mmpareto_small_gradients_by_hand() -> None:
    """Gradients of norm below 1 (the usual case): g_mm = (0.1, 0), g_uni = (-0.05, 0.1) conflict.
    k = 0.0175 / 0.0325 = 7/13; d = 7/13 g_mm + 6/13 g_uni = (0.4, 0.6) / 13; 2d (norm 0.1109) is below
    |g_mm + g_uni| = sqrt(0.0125) = 0.1118, so it is stretched to that norm along (2, 3), then times gamma 1.5."""
    from avbias.methods.mmpareto import combine, pareto_weights

    g_mm, g_uni = torch.tensor([0.1, 0.0], dtype=torch.float64), torch.tensor([-0.05, 0.1], dtype=torch.float64)
    k = pareto_weights(g_mm, g_uni)
    assert k == (pytest.approx(7 / 13), pytest.approx(6 / 13))
    expected = torch.tensor([2.0, 3.0], dtype=torch.float64) / math.sqrt(13) * math.sqrt(0.0125) * 1.5
    torch.testing.assert_close(combine(g_mm, g_uni, k, 1.5), expected)


class _PrototypeRun:
    """The RunContext PMR reads at epoch start: fixed train features and labels, and the run's device."""

    splits = ("train", "val", "test")
    num_classes = 2
    train_batches = 1

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)

    def predict(self, split: str, fraction: float = 1.0, zeroed: tuple[str, ...] = (),
                train_inputs: bool = False) -> dict[str, np.ndarray]:
        assert (split, fraction, train_inputs) == ("train", 0.1, True)
        feats = np.array([[0.0, 2.0], [2.0, 0.0], [4.0, 2.0]], np.float32)
        return {"labels": np.array([0, 1, 0]), "features_audio": feats, "features_visual": feats * 2}


def test_pmr_prototypes_are_placed_on_the_runs_device() -> None:
    """The class means (here (2, 2) and (2, 0) for audio, twice that for visual) go to the run's device (the meta
    device stands in for a GPU: a prototype left on the CPU would not be there)."""
    method = create_method("pmr", {})
    assert method.epoch_start(None, 0, _PrototypeRun("meta")) == {}
    assert {m: p.device.type for m, p in method.prototypes.items()} == {"audio": "meta", "visual": "meta"}
    method.epoch_start(None, 0, _PrototypeRun("cpu"))
    torch.testing.assert_close(method.prototypes["audio"], torch.tensor([[2.0, 2.0], [2.0, 0.0]]))
    torch.testing.assert_close(method.prototypes["visual"], torch.tensor([[4.0, 4.0], [4.0, 0.0]]))


def _mla_steps(method, model: AVClassifier, batches: list[int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One pass per modality for each batch index (the training loop's order): (head weight gradient before
    after_backward, the step's mean feature, the gradient after), in float64."""
    seen = []
    for b in batches:
        inputs, labels = av_batch(seed=20 + b)
        for (m,) in method.step_modalities(b):
            model.zero_grad(set_to_none=True)
            out = model({m: inputs[m]})
            method.loss(out, labels, 0).backward()
            g = model.head.fc.weight.grad.double().numpy().copy()
            method.after_backward(model, out, labels, 0)
            seen.append((g, out.features[m].detach().double().mean(0).numpy(),
                         model.head.fc.weight.grad.double().numpy().copy()))
    return seen


def test_mla_balancebenchmark_projector_accumulates_across_steps() -> None:
    """GSPlugin keeps P between steps: with k = P x, P <- (P - k k^T / (a + k x^T)) / ||.||_F (entry by entry),
    a = 0.1^(1 + batch / batches); step 1 leaves the gradient alone, step s >= 2 adds g P_s^T."""
    torch.manual_seed(6)
    model = AVClassifier(("audio", "visual"), 3, width=8, fusion="shared")
    method = create_method("mla", {"methods": {"mla": {"projection": "balancebenchmark"}}})
    method.batches = 2
    (g1, _, after1), (g2, x2, after2), (g3, x3, after3), (g4, x4, after4) = _mla_steps(method, model, [0, 1])

    def update(p: np.ndarray, x: np.ndarray, a: float) -> np.ndarray:
        k = p @ x
        p = p - np.outer(k, k) / (a + np.outer(k, x))
        return p / np.sqrt((p**2).sum())

    np.testing.assert_allclose(after1, g1)
    p2 = update(np.eye(len(x2)), x2, 0.1)                 # batch 0: a = 0.1
    np.testing.assert_allclose(after2, g2 + g2 @ p2.T, rtol=1e-4, atol=1e-6)
    p3 = update(p2, x3, 0.1**1.5)                         # batch 1 of 2: a = 0.1^1.5, from P_2 (not from I)
    np.testing.assert_allclose(after3, g3 + g3 @ p3.T, rtol=1e-4, atol=1e-6)
    p4 = update(p3, x4, 0.1**1.5)
    np.testing.assert_allclose(after4, g4 + g4 @ p4.T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(method.projectors["shared"].double().numpy(), p4, rtol=1e-4, atol=1e-6)


def test_mla_owm_leaves_a_modalitys_gradient_to_the_other_modalitys_projector_on_later_batches() -> None:
    """Paper OWM over two batches: the audio step of batch 1 is projected by P_visual only, even though P_audio is
    no longer the identity by then; P_m <- P - P x x^T P / (a + x^T P x) after each of m's steps."""
    torch.manual_seed(7)
    model = AVClassifier(("audio", "visual"), 3, width=8, fusion="shared")
    method = create_method("mla", {"methods": {"mla": {"projection": "owm", "owm_alpha": 0.5}}})
    steps = _mla_steps(method, model, [0, 1])

    def update(p: np.ndarray, x: np.ndarray) -> np.ndarray:
        px = p @ x
        return p - np.outer(px, px) / (0.5 + x @ px)

    eye = np.eye(len(steps[0][1]))
    p_a0, p_v0 = update(eye, steps[0][1]), update(eye, steps[1][1])
    (g_a1, x_a1, after_a1), (g_v1, x_v1, after_v1) = steps[2], steps[3]
    np.testing.assert_allclose(after_a1, g_a1 @ p_v0, rtol=1e-4, atol=1e-6)
    p_a1 = update(p_a0, x_a1)
    np.testing.assert_allclose(after_v1, g_v1 @ p_a1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(method.projectors["audio"].double().numpy(), p_a1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(method.projectors["visual"].double().numpy(), update(p_v0, x_v1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("projection", ["owm", "balancebenchmark"])
def test_mla_projectors_live_on_the_heads_device(projection: str) -> None:
    """The meta device stands in for a GPU: a projector built on the CPU would not be where the head is."""
    from avbias.models.fusion import ModelOutput

    model = AVClassifier(("audio", "visual"), 3, width=8, fusion="shared").to("meta")
    weight = model.head.fc.weight
    weight.grad = torch.zeros_like(weight)
    method = create_method("mla", {"methods": {"mla": {"projection": projection}}})
    method.step_count = 1
    out = ModelOutput(logits=torch.zeros(4, 3, device="meta"),
                      features={"audio": torch.zeros(4, weight.shape[1], device="meta")},
                      modality_logits={"audio": torch.zeros(4, 3, device="meta")})
    method.after_backward(model, out, torch.zeros(4, dtype=torch.long), 0)
    assert method.projectors and all(p.device.type == "meta" for p in method.projectors.values())
    assert weight.grad.device.type == "meta"


@pytest.mark.parametrize("name", ["mla", "gblending"])
def test_mla_and_gblending_apply_by_dataset_overrides(name: str) -> None:
    field, value = {"mla": ("owm_alpha", 0.25), "gblending": ("super_epoch", 3)}[name]
    params = {"methods": {name: {"by_dataset": {"cremad": {field: value}}}}}
    assert getattr(create_method(name, params, "cremad").hp, field) == value
    assert getattr(create_method(name, params, "kinetics_sounds").hp, field) != value


class _BlendingRun:
    """The RunContext G-Blending reads: the splits present, and per split the fused, separate-head (aux_logits_*)
    and fusion-block (logits_*) logits, which `moved` swaps for later (better trained) ones."""

    num_classes = 2
    train_batches = 1
    device = torch.device("cpu")

    def __init__(self, splits: tuple[str, ...] = ("train", "val", "test")) -> None:
        self.splits = splits
        self.moved = False
        rng = np.random.default_rng(0)
        self.logits = {(split, moved, key): rng.normal(size=(4, 2)).astype(np.float32) * (2 if moved else 1)
                       for split in ("train", "val") for moved in (False, True)
                       for key in ("logits", "aux_logits_audio", "aux_logits_visual", "logits_audio",
                                   "logits_visual")}

    def predict(self, split: str, fraction: float = 1.0, zeroed: tuple[str, ...] = (),
                train_inputs: bool = False) -> dict[str, np.ndarray]:
        assert (fraction, zeroed, train_inputs) == (1.0, (), False)
        return {"labels": np.array([0, 1, 1, 0])} | {k: z for (s, moved, k), z in self.logits.items()
                                                       if s == split and moved == self.moved}


@pytest.mark.parametrize(("heads", "prefix"), [("separate", "aux_logits"), ("fusion_blocks", "logits")])
def test_gblending_re_estimates_from_its_own_unimodal_heads_by_hand(heads: str, prefix: str) -> None:
    """Online G-Blend (super_epoch 2): losses at epoch 0 and 2; per head dG = L_val(0) - L_val(2),
    dO = (L_val(2) - L_train(2)) - (L_val(0) - L_train(0)), w = max(dG, 0) / dO^2 normalised; the unimodal losses
    are those of the configured heads."""
    run = _BlendingRun()
    method = create_method("gblending", {"methods": {"gblending": {"super_epoch": 2, "unimodal_heads": heads}}})
    labels = np.array([0, 1, 1, 0])

    def loss(split: str, moved: bool, head: str) -> float:
        key = "logits" if head == "fused" else f"{prefix}_{head}"
        return ce_by_hand(run.logits[(split, moved, key)], labels)

    raw = {}
    for h in ("fused", "audio", "visual"):
        gain = loss("val", False, h) - loss("val", True, h)
        overfit = (loss("val", True, h) - loss("train", True, h)) - (loss("val", False, h) - loss("train", False, h))
        raw[h] = max(gain, 0.0) / (overfit**2 + 1e-8)
    assert sum(raw.values()) > 0
    expected = {f"weight_{h}": pytest.approx(w / sum(raw.values()), rel=1e-4) for h, w in raw.items()}
    method.setup(None, run)
    assert method.epoch_start(None, 0, run) == {f"weight_{h}": pytest.approx(1 / 3) for h in raw}
    run.moved = True
    assert method.epoch_start(None, 1, run) == {f"weight_{h}": pytest.approx(1 / 3) for h in raw}
    assert method.epoch_start(None, 2, run) == expected


def test_gblending_without_a_validation_split_says_what_to_do() -> None:
    with pytest.raises(ParamsError) as err:
        create_method("gblending", {}).setup(None, _BlendingRun(("train", "test")))
    assert str(err.value) == ("gblending estimates its weights on held-out data, and splits.val_fraction 0 leaves no "
                              "validation split: carve one out of train, or leave gblending out of run.methods "
                              "(BalanceBenchmark estimates on the test set, which avbias does not do)")


def test_pmr_momentum_from_the_first_epoch_starts_from_fresh_prototypes() -> None:
    """momentum_starts 0: before any prototype exists there is nothing to average with, so epoch 0's are the fresh
    class means; epoch 1's are (1 - m) fresh + m previous (m = 0.2, the default)."""
    method = create_method("pmr", {"methods": {"pmr": {"momentum_starts": 0}}})
    run = _PrototypeRun("cpu")
    method.epoch_start(None, 0, run)
    torch.testing.assert_close(method.prototypes["audio"], torch.tensor([[2.0, 2.0], [2.0, 0.0]]))
    method.prototypes = {m: p + 1.0 for m, p in method.prototypes.items()}
    method.epoch_start(None, 1, run)
    torch.testing.assert_close(method.prototypes["audio"], torch.tensor([[2.2, 2.2], [2.2, 0.2]]))


# --- third pass (issue 21, 2026-12-03): the survivors of the first full `mutmut run "avbias.methods*"` -------------


def test_run_methods_leaves_out_run_exclude_methods() -> None:
    from avbias.methods import METHODS, run_methods

    assert run_methods({"run": {"methods": "all", "exclude_methods": ["gblending", "pmr"]}}) == [
        m for m in sorted(METHODS) if m not in ("gblending", "pmr")]
    assert run_methods({"run": {"methods": ["pmr", "baseline", "mla"], "exclude_methods": ["pmr"]}}) == [
        "baseline", "mla"]
    assert run_methods({"run": {"methods": ["pmr"], "exclude_methods": None}}) == ["pmr"]


def test_check_method_params_names_an_unknown_excluded_method() -> None:
    from avbias.methods.registry import check_method_params

    with pytest.raises(ParamsError, match=r"^p: run.exclude_methods: unknown method 'nope'; registered: \["):
        check_method_params({"run": {"methods": "all", "exclude_methods": ["baseline", "nope"]}}, "p")
    check_method_params({"run": {"methods": "all", "exclude_methods": ["baseline"]}}, "p")


class _Batches:
    """The RunContext MLA's setup reads: the train loader's length."""

    def __init__(self, train_batches: int) -> None:
        self.train_batches = train_batches


@pytest.mark.parametrize(("train_batches", "batches"), [(0, 1), (1, 1), (3, 3)])
def test_mla_setup_takes_the_loaders_length_at_least_one(train_batches: int, batches: int) -> None:
    """GSPlugin's alpha = 0.1^(1 + batch / len(train_loader)): one batch per epoch is 1, not floored higher."""
    model = AVClassifier(("audio", "visual"), 3, width=8, fusion="shared")
    method = create_method("mla", {})
    method.setup(model, _Batches(train_batches))
    assert method.batches == batches and model.head.test_fusion == "batch_entropy"


def test_mla_starts_at_batch_0_of_1() -> None:
    """Before setup and the first step_modalities the projector's alpha is that of batch 0 of 1 (0.1^(1 + 0/1)):
    no step, no projector."""
    method = create_method("mla", {"methods": {"mla": {"projection": "balancebenchmark"}}})
    assert (method.batch, method.batches, method.step_count, method.projectors) == (0, 1, 0, {})


def test_pmr_logs_nothing_before_its_first_loss() -> None:
    """after_backward returns what the last loss computed: before any, an empty dict (the training loop's
    logs are merged with it), not None."""
    assert create_method("pmr", {}).after_backward(None, None, None, 0) == {}


def test_a_method_without_a_window_is_inside_it_up_to_epoch_1e9() -> None:
    """No modulation_ends: the window ends at epoch 10**9 (an end no run reaches), inclusive."""
    method = create_method("baseline", {})
    assert method.in_window(10**9) and not method.in_window(10**9 + 1)
