"""Foundation baselines built offline with random weights: output sizes, strict reload from local files."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from clearct.common.errors import ClearctError
from clearct.io.volume import CTVolume


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _images(n: int, size: int = 224) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _embed(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


@pytest.mark.slow
def test_biomedclip_reload_from_open_clip_file(tmp_path):
    pytest.importorskip("open_clip")
    from clearct.encoders.baselines import build_biomedclip
    from clearct.encoders.baselines.common import load_strict, sub_state

    torch.manual_seed(1)
    model = build_biomedclip()
    assert model.weights_sha256 == "random-init" and not model.is_3d
    x = _images(1)
    out = _embed(model, x)
    assert out.shape == (1, 512) and torch.isfinite(out).all()
    # the released open_clip_pytorch_model.bin holds the whole CLIP model: visual.*, text.*, logit_scale
    state = {f"visual.{k}": v for k, v in model.visual.state_dict().items()}
    state |= {"text.proj.weight": torch.zeros(2, 2), "logit_scale": torch.tensor(4.6)}
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(state, path)
    torch.manual_seed(2)
    reloaded = build_biomedclip(weights=path)
    assert torch.equal(_embed(reloaded, x), out)
    assert len(reloaded.weights_sha256) == 64

    # strict: a tensor missing from the file is an error, never a silently random layer
    del state["visual.head.proj.weight"]
    with pytest.raises(ClearctError, match="head.proj.weight"):
        load_strict(reloaded.visual, sub_state(state, "visual.", path), path)


def test_missing_extra_names_the_pip_extra(monkeypatch):
    from clearct.encoders.baselines import build_biomedclip, build_merlin, build_sam2_hiera_large

    for module, build, extra in [
        ("open_clip.timm_model", build_biomedclip, "biomedclip"),
        ("transformers", build_sam2_hiera_large, "sam2"),
        ("merlin.models.i3res", build_merlin, "merlin"),
    ]:
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
        with pytest.raises(ClearctError, match=rf"pip install 'clearct\[{extra}\]'"):
            build()


def test_ctclip_absent_is_one_clear_error():
    from clearct.encoders.baselines import build_ctclip

    with pytest.raises(ClearctError, match="CT-CLIP|GPU"):
        build_ctclip()


@pytest.mark.slow
def test_sam2_hiera_large_loads_the_file_weights(tmp_path):
    pytest.importorskip("transformers")
    from clearct.encoders.baselines import build_sam2_hiera_large
    from clearct.encoders.baselines.sam2 import sam2_to_transformers

    torch.manual_seed(0)
    random_model = build_sam2_hiera_large()
    assert _embed(random_model, _images(1)).shape == (1, 256)
    x = _images(1, size=64)  # Hiera interpolates its position embedding: small inputs keep the test fast
    out_random = _embed(random_model, x)
    # A different random model written in sam2's checkpoint layout (names as in facebookresearch/sam2's Hiera
    # and FpnNeck), inside a full-model checkpoint with tensors of other SAM2 parts.
    torch.manual_seed(1)
    source = build_sam2_hiera_large()
    out_source = _embed(source, x)
    original = {}
    for key, value in source.vision.state_dict().items():
        key = key.replace("backbone.", "trunk.", 1).replace("patch_embed.projection.", "patch_embed.proj.")
        key = key.replace("layer_norm1.", "norm1.").replace("layer_norm2.", "norm2.")
        key = key.replace("mlp.proj_in.", "mlp.layers.0.").replace("mlp.proj_out.", "mlp.layers.1.")
        if key.startswith("neck.convs."):
            key = key[: len("neck.convs.N")] + ".conv" + key[len("neck.convs.N") :]
        original[f"image_encoder.{key}"] = value
    assert sam2_to_transformers({k[len("image_encoder.") :]: v for k, v in original.items()}).keys() == (
        source.vision.state_dict().keys()
    )
    checkpoint = {"model": original | {"sam_mask_decoder.iou_token.weight": torch.zeros(1, 256)}}
    path = tmp_path / "sam2_hiera_large.pt"
    torch.save(checkpoint, path)

    loaded = build_sam2_hiera_large(weights=path)
    out_loaded = _embed(loaded, x)
    assert torch.equal(out_loaded, out_source)
    assert not torch.allclose(out_loaded, out_random)
    loaded_state = loaded.vision.state_dict()
    converted = sam2_to_transformers({k[len("image_encoder.") :]: v for k, v in original.items()})
    assert all(torch.equal(loaded_state[k], v) for k, v in converted.items())

    # the Hugging Face layout (a Sam2Model folder: vision_encoder.* in model.safetensors) loads the same tensors
    from safetensors.torch import save_file

    folder = tmp_path / "hf"
    folder.mkdir()
    hf_state = {f"vision_encoder.{k}": v.contiguous() for k, v in source.vision.state_dict().items()}
    save_file(hf_state | {"mask_decoder.iou_token.weight": torch.zeros(1, 256)}, folder / "model.safetensors")
    assert torch.equal(_embed(build_sam2_hiera_large(weights=folder), x), out_source)


def _phantom(z: int = 12, y: int = 40, x: int = 36, spacing=(3.0, 1.5, 1.5)) -> CTVolume:
    hu = np.full((z, y, x), -1000, np.int16)
    hu[:, 10:30, 8:28] = 40
    return CTVolume(hu=hu, spacing_mm=spacing, z_mm=np.arange(z) * spacing[0], scan_id="p")


def test_ras_volume_orientation_and_scaling():
    from clearct.encoders.baselines.volume3d import pad_or_crop, ras_volume

    vol = _phantom()
    vol.hu[-1, 0, 0] = 1000  # most superior slice, most anterior row, patient-right column
    ras = ras_volume(vol, (1.5, 1.5, 3.0), (-1000.0, 1000.0), (0.0, 1.0))
    assert ras.shape == (1, 1, 36, 40, 12)
    assert ras[0, 0, -1, -1, -1] == 1.0  # RAS: +x right, +y anterior, +z superior
    assert ras.min() == 0.0 and torch.isclose(ras[0, 0, 20, 20, 5], torch.tensor(0.52))
    fitted = pad_or_crop(ras, (32, 48, 12))
    assert fitted.shape == (1, 1, 32, 48, 12)
    assert torch.equal(fitted[0, 0, :, 4:44], ras[0, 0, 2:34])


@pytest.mark.slow
def test_merlin_embeds_a_volume_and_reloads(tmp_path):
    pytest.importorskip("merlin")
    from clearct.encoders.baselines import build_merlin

    torch.manual_seed(0)
    model = build_merlin()
    assert model.is_3d and model.embed_dim == 512
    x = model.prepare_volume(_phantom())
    assert x.shape == (1, 1, 224, 224, 160)
    small = x[..., 96:128, 96:128, 64:80]  # the full 224×224×160 input takes minutes on 2 CPU cores
    out = _embed(model, small)
    assert out.shape == (1, 512) and torch.isfinite(out).all()
    state = {f"encode_image.i3_resnet.{k}": v for k, v in model.i3_resnet.state_dict().items()}
    path = tmp_path / "merlin.pt"
    torch.save(state | {"logit_scale": torch.tensor(1.0)}, path)
    torch.manual_seed(1)
    assert torch.equal(_embed(build_merlin(weights=path), small), out)


def test_baselines_need_weights_or_an_explicit_random_init():
    from clearct.encoders.random_init import check_baseline_weights

    for name in ("biomedclip", "sam2_hiera_large", "merlin", "ctclip"):
        with pytest.raises(ClearctError, match=rf"--encoder {name} is a pretrained baseline.*--random-init"):
            check_baseline_weights(name, None, False)
        check_baseline_weights(name, None, True)  # explicit consent: a control or a test
        check_baseline_weights(name, "weights.bin", False)
    check_baseline_weights("vit_conv_test", None, False)  # architectures: random init is their own spelling
    with pytest.raises(ClearctError, match="contradict"):
        check_baseline_weights("merlin", "weights.bin", True)


def test_random_init_features_are_announced_where_they_are_made_and_used(tmp_path, capsys):
    import json

    from safetensors.torch import save_file

    from clearct.cli import main
    from clearct.encoders import create_encoder
    from cohort_files import nifti, scans_table

    rows = [(f"s{i}", f"p{i}", nifti(tmp_path / f"s{i}.nii.gz", z=3, seed=i)) for i in range(4)]
    table = scans_table(tmp_path / "scans.csv", rows)
    assert main(["extract", "--scans", str(table), "--encoder", "vit_conv_test", "--out", str(tmp_path / "f")]) == 0
    err = capsys.readouterr().err
    assert err.count("clearct extract: warning: features of vit_conv_test come from a randomly initialised") == 2
    assert json.loads((tmp_path / "f" / "extract_summary.json").read_text())["random_init"] is True
    (tmp_path / "labels.csv").write_text("patient_id,y\np0,0\np1,1\np2,0\np3,1\n")
    assert main(["crossval", "--features", str(tmp_path / "f"), "--labels", str(tmp_path / "labels.csv"),
                 "--targets", "y", "--task", "binary", "--folds", "2", "--epochs", "1", "--min-steps", "0",
                 "--bootstrap", "0", "--device", "cpu", "--out", str(tmp_path / "cv")]) == 0
    assert "randomly initialised encoder" in capsys.readouterr().err
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert summary["issues"] == {"random_init_features": 1}
    assert any("randomly initialised" in w for w in summary["warnings"])

    weights = tmp_path / "w.safetensors"  # the same network from a weights file: no warning anywhere
    save_file({k: v.contiguous() for k, v in create_encoder("vit_conv_test").state_dict().items()}, weights)
    assert main(["extract", "--scans", str(table), "--encoder", "vit_conv_test", "--weights", str(weights),
                 "--out", str(tmp_path / "g")]) == 0
    assert "randomly initialised" not in capsys.readouterr().err
    assert json.loads((tmp_path / "g" / "extract_summary.json").read_text())["random_init"] is False
