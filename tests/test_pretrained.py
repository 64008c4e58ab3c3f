"""Encoders from external weights (model.pretrained): the published checkpoint layouts map tensor for tensor,
files are verified before any job runs, and a pretrained run goes through the pipeline.

The checkpoints are made here, in the key layout and shapes of the published files (torchvision's
resnet18-f37072fd.pth, PANNs' Cnn14_mAP=0.431.pth), written out independently of avbias's mapping code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from avbias.config import load_params
from avbias.errors import DataError, ParamsError
from avbias.methods import create_method
from avbias.models.encoders import ModalityEncoder
from avbias.models.weights import PUBLISHED, check_pretrained, load_encoder, weights_files
from avbias.train.loop import Trainer

from conftest import make_project, snakemake

SHIPPED = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def bn_shapes(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": () if k == "num_batches_tracked" else (channels,) for k in BN}


def torchvision_resnet18_shapes(width: int = 64, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """torchvision.models.resnet18().state_dict(): keys and shapes (width 64 is the published network)."""
    shapes = {"conv1.weight": (width, 3, 7, 7), **bn_shapes("bn1", width)}
    c_in = width
    for layer in range(1, 5):
        c_out = width * 2 ** (layer - 1)
        for block in range(2):
            name, first_in = f"layer{layer}.{block}", c_in if block == 0 else c_out
            shapes |= {f"{name}.conv1.weight": (c_out, first_in, 3, 3), **bn_shapes(f"{name}.bn1", c_out),
                       f"{name}.conv2.weight": (c_out, c_out, 3, 3), **bn_shapes(f"{name}.bn2", c_out)}
            if block == 0 and layer > 1:
                shapes |= {f"{name}.downsample.0.weight": (c_out, c_in, 1, 1),
                           **bn_shapes(f"{name}.downsample.1", c_out)}
        c_in = c_out
    return shapes | {"fc.weight": (classes, 8 * width), "fc.bias": (classes,)}


def panns_cnn14_shapes(width: int = 64, mel_bins: int = 64) -> dict[str, tuple[int, ...]]:
    """PANNs Cnn14 (audioset_tagging_cnn pytorch/models.py) state dict at 32 kHz: front end, bn0 over mel bins,
    six ConvBlocks, fc1, fc_audioset (527 AudioSet classes)."""
    shapes = {"spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024),
              "spectrogram_extractor.stft.conv_imag.weight": (513, 1, 1024),
              "logmel_extractor.melW": (513, mel_bins), **bn_shapes("bn0", mel_bins)}
    c_in = 1
    for i in range(6):
        c_out, name = width * 2**i, f"conv_block{i + 1}"
        shapes |= {f"{name}.conv1.weight": (c_out, c_in, 3, 3), f"{name}.conv2.weight": (c_out, c_out, 3, 3),
                   **bn_shapes(f"{name}.bn1", c_out), **bn_shapes(f"{name}.bn2", c_out)}
        c_in = c_out
    return shapes | {"fc1.weight": (c_in, c_in), "fc1.bias": (c_in,), "fc_audioset.weight": (527, c_in),
                     "fc_audioset.bias": (527,)}


def make_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Every tensor a distinct constant (its index), so a tensor loaded in the wrong place is seen."""
    return {k: (torch.tensor(i) if k.endswith("num_batches_tracked")
                else torch.full(shape, float(i) / 1000)) for i, (k, shape) in enumerate(shapes.items())}


def trained_like_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Values a trained network could have (He-scaled weights, unit BatchNorm), for runs that must train."""
    torch.manual_seed(0)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(100)
        elif len(shape) == 1 and key.endswith(("running_var", "weight")):   # BatchNorm scale and variance
            out[key] = torch.ones(shape)
        elif len(shape) == 1 or key.endswith("melW"):
            out[key] = torch.zeros(shape)
        else:
            out[key] = torch.randn(shape) * (2 / torch.tensor(shape[1:]).prod()) ** 0.5
    return out


def model_cfg(**pretrained: Any) -> dict[str, Any]:
    return SHIPPED["model"] | {"pretrained": SHIPPED["model"]["pretrained"] | pretrained}


def test_torchvision_resnet18_layout_maps_every_tensor(tmp_path: Path) -> None:
    state = make_state(torchvision_resnet18_shapes())
    torch.save(state, path := tmp_path / "imagenet.pth")
    encoder = ModalityEncoder("visual", 64)
    record = load_encoder(encoder, weights_files(model_cfg(visual=str(path)))["visual"])
    assert record["dropped"] == ["fc.weight", "fc.bias"]
    assert record["tensors"] == len(state) - 2 == len(encoder.state_dict())
    own = encoder.state_dict()
    assert torch.equal(own["net.stem.0.weight"], state["conv1.weight"])
    assert torch.equal(own["net.stem.1.running_var"], state["bn1.running_var"])
    assert torch.equal(own["net.layers.3.conv2.weight"], state["layer2.1.conv2.weight"])
    assert torch.equal(own["net.layers.6.shortcut.1.bias"], state["layer4.0.downsample.1.bias"])


def test_audio_resnet18_first_convolution_is_the_sum_over_rgb(tmp_path: Path) -> None:
    state = make_state(torchvision_resnet18_shapes())
    state["conv1.weight"] = torch.randn(64, 3, 7, 7)
    torch.save(state, path := tmp_path / "imagenet.pth")
    encoder = ModalityEncoder("audio", 64)
    load_encoder(encoder, weights_files(model_cfg(audio=str(path)))["audio"])
    first = encoder.net.stem[0].weight
    assert first.shape == (64, 1, 7, 7)
    torch.testing.assert_close(first, state["conv1.weight"].sum(1, keepdim=True))   # = input repeated on RGB
    x = torch.randn(2, 1, 40, 40)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, first, stride=2, padding=3),
                               torch.nn.functional.conv2d(x.repeat(1, 3, 1, 1), state["conv1.weight"], stride=2,
                                                          padding=3), rtol=1e-4, atol=1e-4)


def test_panns_cnn14_checkpoint_maps_every_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    state = make_state(panns_cnn14_shapes())
    path = PUBLISHED["panns:cnn14"].path()
    path.parent.mkdir(parents=True)
    torch.save({"iteration": 660000, "model": state}, path)     # PANNs' checkpoint: the state dict under 'model'
    encoder = ModalityEncoder("audio", 64, arch="cnn14", mel_bins=64)
    record = load_encoder(encoder, weights_files(model_cfg(audio="panns:cnn14"))["audio"])
    assert sorted(record["dropped"]) == sorted(["fc_audioset.weight", "fc_audioset.bias", "logmel_extractor.melW",
                                                "spectrogram_extractor.stft.conv_real.weight",
                                                "spectrogram_extractor.stft.conv_imag.weight"])
    assert record["tensors"] == len(state) - 5 == len(encoder.state_dict())
    assert torch.equal(encoder.net.conv_block1.conv1.weight, state["conv_block1.conv1.weight"])
    assert torch.equal(encoder.net.conv_block6.bn2.running_mean, state["conv_block6.bn2.running_mean"])
    assert torch.equal(encoder.net.fc1.weight, state["fc1.weight"])
    assert encoder.out_dim == 2048


def test_cnn14_forward_matches_panns_orientation() -> None:
    """bn0 normalises each mel bin, and the convolutions see (time, frequency) as PANNs' do."""
    torch.manual_seed(0)
    encoder = ModalityEncoder("audio", 8, arch="cnn14", mel_bins=64).eval()
    encoder.net.bn0.running_mean.copy_(torch.linspace(-1, 1, 64))
    spec = torch.randn(2, 1, 64, 96)        # avbias: (B, 1, mel bins, frames)
    block = encoder.net.conv_block1
    x = (spec - encoder.net.bn0.running_mean[:, None]) / torch.sqrt(encoder.net.bn0.running_var[:, None] + 1e-5)
    x = x.transpose(2, 3)                   # PANNs: (B, 1, frames, mel bins)
    expected = torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))))
    captured = {}
    block.register_forward_hook(lambda _m, _i, out: captured.update(out=out))
    encoder(spec)
    torch.testing.assert_close(captured["out"], torch.nn.functional.avg_pool2d(expected, 2))


def test_missing_weights_fail_at_parse_time_naming_file_folder_and_command(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    params = SHIPPED | {"model": model_cfg(visual="torchvision:resnet18")}
    with pytest.raises(ParamsError) as err:
        check_pretrained(params)
    message = str(err.value)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert "model.pretrained.visual" in message and f"looked for: {expected}" in message
    assert "44.7 MB" in message and "f37072fd" in message
    assert "curl -L -o" in message and "download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_checksum_mismatch_fails_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = PUBLISHED["torchvision:resnet18"].path()
    path.parent.mkdir(parents=True)
    torch.save(make_state(torchvision_resnet18_shapes(width=8)), path)   # right name, not the published bytes
    params = SHIPPED | {"model": model_cfg(visual="torchvision:resnet18")}
    with pytest.raises(ParamsError, match=r"sha256 [0-9a-f]{64} does not match the published checksum.*f37072fd"):
        check_pretrained(params)
    pinned = SHIPPED | {"model": model_cfg(audio=str(path), sha256={"audio": "0" * 64})}
    with pytest.raises(ParamsError, match=r"does not match model.pretrained.sha256.audio"):
        check_pretrained(pinned)


def test_published_resnet18_needs_the_standard_width_and_cnn14_64_mel_bins() -> None:
    """Checked before the files (none exist here): the options alone decide."""
    narrow = SHIPPED | {"model": model_cfg(visual="torchvision:resnet18") | {"width": 8}}
    with pytest.raises(ParamsError, match="set model.width to 64"):
        check_pretrained(narrow)
    stft = SHIPPED | {"model": model_cfg(audio="panns:cnn14"), "run": SHIPPED["run"] | {"datasets": ["cremad"]}}
    with pytest.raises(ParamsError, match="reads 64 mel bins; set extract.cremad.audio: fbank"):
        check_pretrained(stft)


def test_trainer_starts_from_the_loaded_tensors_and_honours_frozen_and_lower_lr(tmp_path: Path,
                                                                                features: Path) -> None:
    state = make_state(torchvision_resnet18_shapes(width=8))
    state["conv1.weight"] = torch.randn(8, 3, 7, 7)
    torch.save(state, path := tmp_path / "r18.pth")
    train = SHIPPED["train"] | {"epochs": 1, "batch_size": 8, "device": "cpu"}
    for mode in ("finetune", "lower_lr", "frozen"):
        params = {"model": model_cfg(audio=str(path), visual=str(path), encoders=mode) | {"width": 8},
                  "train": train, "methods": SHIPPED["methods"]}
        trainer = Trainer(create_method("baseline", params), features, params, 0, [])
        encoders = trainer.model.encoders
        assert torch.equal(encoders["visual"].net.stem[0].weight, state["conv1.weight"])
        assert torch.equal(encoders["audio"].net.stem[0].weight, state["conv1.weight"].sum(1, keepdim=True))
        lrs = sorted(g["lr"] for g in trainer.optimizer.param_groups)
        trainable = {m: any(p.requires_grad for p in encoders[m].parameters()) for m in encoders}
        trainer.set_train_mode()
        if mode == "finetune":
            assert lrs == [train["lr"]] and all(trainable.values())
        if mode == "lower_lr":
            assert lrs == pytest.approx([train["lr"] * 0.1, train["lr"]]) and all(trainable.values())
        if mode == "frozen":
            assert not any(trainable.values()) and not encoders["audio"].training
        assert trainer.initialisation["encoders"] == mode
        assert trainer.initialisation["visual"]["tensors"] == len(state) - 2


def test_a_checkpoint_that_does_not_fit_names_the_tensors(tmp_path: Path) -> None:
    state = make_state(torchvision_resnet18_shapes(width=16))
    torch.save(state, path := tmp_path / "wide.pth")
    with pytest.raises(DataError, match=r"does not fit the visual encoder.*net.stem.0.weight: file \(16, 3, 7, 7\)"):
        load_encoder(ModalityEncoder("visual", 8), weights_files(model_cfg(visual=str(path)))["visual"])


def test_snakemake_dry_run_fails_at_parse_time_without_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    project = make_project(tmp_path / "project",
                           {"model": {"width": 64, "pretrained": {"visual": "torchvision:resnet18"}}})
    proc = snakemake(project, "-n", check=False)
    assert proc.returncode != 0
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert "model.pretrained.visual: torchvision:resnet18" in proc.stdout
    assert f"looked for: {expected}" in proc.stdout and "curl -L -o" in proc.stdout
    assert not (project / "data").exists() and not (project / "results").exists()


def test_tiny_pipeline_with_pretrained_encoders_names_the_initialisation(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Both encoders from external weights in the published layouts (at width 8, as paths), through the
    whole pipeline; the report's Protocol table and the Findings name the initialisation."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    panns = PUBLISHED["panns:cnn14"].path()
    panns.parent.mkdir(parents=True)
    torch.save({"model": trained_like_state(panns_cnn14_shapes(width=8))}, panns)
    torch.save(trained_like_state(torchvision_resnet18_shapes(width=8)), visual := tmp_path / "imagenet_w8.pth")
    overrides = {"model": {"pretrained": {"audio": "panns:cnn14", "visual": str(visual)}}, "train": {"epochs": 2},
                 "run": {"methods": ["baseline"]}}
    project = make_project(tmp_path / "project", overrides)
    # CNN14 reads 64 mel bins: the CREMA-D recipe becomes a filterbank one, edited in params.yaml as a user would
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["extract"]["cremad"] = {"audio": "fbank", "sample_rate": 16000, "duration_s": 1.0, "num_mel_bins": 64,
                                   "frame_shift_ms": 10, "target_frames": 100, "norm_mean": -4.5, "norm_std": 5.1,
                                   "num_frames": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(project / "params.yaml", project / "tiny.yaml")   # valid before Snakemake reads it
    snakemake(project, "all")
    metrics = json.loads(next((project / "results/tiny").rglob("baseline/seed0/metrics.json")).read_text())
    assert metrics["initialisation"]["audio"]["source"] == "panns:cnn14"
    assert metrics["initialisation"]["visual"]["file"] == str(visual)
    html = next((project / "results/tiny").rglob("report.html")).read_text()
    assert "encoder initialisation" in html and "audio panns:cnn14" in html
    assert "the bias persists after external pretraining" in html


def test_a_shared_head_with_cnn14_beside_resnet18_fails_before_any_job() -> None:
    from avbias.methods import check_method_params

    params = SHIPPED | {"model": model_cfg(audio="panns:cnn14"), "run": SHIPPED["run"] | {"methods": ["mla"]}}
    with pytest.raises(ParamsError, match="'mla' shares one head across modalities"):
        check_method_params(params)
    check_method_params(params | {"run": SHIPPED["run"] | {"methods": ["baseline"]}})


def test_the_docs_example_is_valid_and_asks_for_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/pretrained.md's params.yaml example passes the schema; without the files it names both."""
    from avbias.config import deep_merge, validate_params

    text = (Path(__file__).parents[1] / "docs" / "pretrained.md").read_text()
    example = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    params = deep_merge(SHIPPED | {"extract": SHIPPED["extract"] | {"cremad": {}}}, example)   # cremad replaced
    validate_params(params)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ParamsError, match="panns:cnn14.*weights file not found"):
        check_pretrained(params)
    (tmp_path / "panns_data").mkdir()
    (tmp_path / "panns_data" / "Cnn14_mAP=0.431.pth").write_bytes(b"any bytes: PANNs publishes no sha256")
    with pytest.raises(ParamsError, match="torchvision:resnet18.*weights file not found"):
        check_pretrained(params)
