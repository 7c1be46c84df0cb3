"""Grad-CAM heatmaps: a planted square is found in every encoder family, every registry 2D encoder gives a map of
the slice's shape (3D and patch encoders one clear line), the h5 file keeps its documented names, and predict /
attention write heatmaps from the command line."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
import torch

from clearct.cli import main
from clearct.common.errors import ClearctError
from clearct.config import MilTraining
from clearct.encoders import create_encoder, list_encoders
from clearct.encoders.embed import embed_volume
from clearct.encoders.spatial import spatial_tap
from clearct.evaluate.localization import (
    grow_box,
    heatmap_pointing,
    lesion_on_slice,
    peak,
    peak_in_box,
    pointing_game,
)
from clearct.evaluate.tables import write_csv
from clearct.inference.gradcam import (
    gaussian_blur,
    gradcam,
    gradient_input,
    normalise_per_target,
    target_logits,
    upsample,
)
from clearct.inference.heatmaps import SIGMA_PX, heatmap_layer, map_shift, scan_heatmaps, write_scan_heatmaps
from clearct.io.heatmaps import ScanHeatmaps, read_heatmaps, write_heatmaps
from clearct.io.tables import LesionBox
from clearct.io.volume import CTVolume
from clearct.mil.data import Bag, load_cohort
from clearct.mil.models import build_model
from clearct.mil.store import MilEnsemble, model_meta
from clearct.modeling.store import save_model
from clearct.modeling.tasks import TaskSpec
from clearct.preprocess import Window, render_slices
from clearct.synth.writers import write_scan

WINDOW = Window("soft", -200.0, 300.0)
SQUARE_SLICE = 2


def _volume(size: int, box: tuple[int, int, int, int], slices: int = 5) -> CTVolume:
    """Soft tissue (40 HU, a little noise) in every slice; one slice holds a bright square (250 HU) at ``box``."""
    rng = np.random.default_rng(0)
    hu = (40 + rng.normal(0, 3, (slices, size, size))).astype(np.int16)
    x1, y1, x2, y2 = box
    hu[SQUARE_SLICE, y1:y2, x1:x2] = 250
    return CTVolume(hu=hu, spacing_mm=(2.0, 1.0, 1.0), z_mm=np.arange(slices) * 2.0, scan_id="scan",
                    patient_id="p", source="test", meta={})


def _bag(volume: CTVolume, encoder: torch.nn.Module) -> Bag:
    f = embed_volume(volume, encoder, [WINDOW], device="cpu")
    return Bag(f.scan_id, f.patient_id, f.feats, f.window.astype(np.int64), f.slice_index, f.z_mm,
               np.zeros(0, np.float32))


def square_probe(feats: np.ndarray, square: int | list[int], attention_gain: float = 3.0) -> torch.nn.Module:
    """A registry ABMIL (feature scaler fitted on the bag) whose score grows along the embedding direction the
    square produces, d = mean e(square slices) − mean e(other slices), measured in the raw embedding (``feats``:
    the rows of one bag or of several, ``square``: the rows of the square slices).

    h₀ = ReLU(u·x̃ + b) with x̃ the scaled features and u ∝ d·σ, so ∂h₀/∂e ∝ d; b puts every plain slice at h₀ ≤ 0.
    h₁ = 1 gives the head's LayerNorm a reference, attention follows h₀, and the head passes LN(z)₀ through SiLU:
    the logit increases with the square slice's projection on d.
    """
    dim = feats.shape[1]
    model = build_model("abmil", dim, 1, hidden=3, dropout=0.0, standardize=True)
    model.scaler.fit([feats])
    squares = np.atleast_1d(square)
    plain = np.delete(feats, squares, axis=0)
    with torch.no_grad():
        d = torch.from_numpy(feats[squares].mean(axis=0) - plain.mean(axis=0)).float()
        u = d * model.scaler.std
        u = u / u.norm()
        scaled = model.scaler(torch.from_numpy(plain).float())
        proj = model.encoder.proj
        proj.weight.zero_()
        proj.weight[0] = u
        proj.bias.copy_(torch.tensor([-float((scaled @ u).max()), 1.0, 0.0]))
        model.V.weight.zero_()
        model.V.weight[:, 0] = 0.2
        model.V.bias.zero_()
        model.w.weight.fill_(attention_gain)
        model.w.bias.zero_()
        first, last = model.head.net[1], model.head.net[4]
        for layer in (first, last):
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[0, 0] = 1.0
    return model.eval()


def _ensemble(models: list[torch.nn.Module], encoder: torch.nn.Module, spec: TaskSpec | None = None) -> MilEnsemble:
    spec = spec or TaskSpec("multilabel", ["square"])
    meta = {"task": spec.to_json(), "windows": [[WINDOW.name, WINDOW.lo, WINDOW.hi]],
            "encoder": {"encoder": encoder.encoder_name, "weights_sha256": encoder.weights_sha256},
            "thresholds": [0.5] * len(spec.output_names), "settings": {"eval_instances": 32768},
            "train_patients": [], "val_patients": []}
    return MilEnsemble(models, [meta] * len(models), torch.device("cpu"))


# One encoder per family: CNNs (clearct's ResNet, a timm ConvNeXt), ViT (timm's: the token path), MambaOut,
# VMamba. vit_conv_test is not here: at random init its fixed sin-cos position table (norm 5.7 per token) is ten
# times the conv stem's content (0.57), so its maps show token positions, not the square; the shape test covers it.
FAMILIES = ["resnet_tiny", "timm:test_convnext", "timm:test_vit", "mambaout_test", "vmamba_test"]
# Gradient × input at random init: mambaout_test puts its peak on the zero-padded image border although the square
# holds the interior maximum, so the test looks inside a 16-px frame; timm:test_convnext gives a flat map (mean 0.515
# on the square against 0.507 elsewhere) and is left out of that method here, as vit_conv_test is of both. Known
# limits of untrained networks (docs/interpret.md); a trained encoder's maps: the demo's pointing game.
BORDER_PX = {("mambaout_test", "gradient-input"): 16}


@pytest.mark.parametrize("name, method", [(n, m) for n in FAMILIES for m in ("gradient-input", "gradcam")
                                          if (n, m) != ("timm:test_convnext", "gradient-input")])
@pytest.mark.slow
def test_the_heatmap_peaks_on_a_planted_square(name, method):
    torch.manual_seed(0)
    encoder = create_encoder(name, image_size=256).eval()
    for cy, cx in ((96, 160), (160, 96)):  # the square and its transpose: a swapped axis would miss one
        box = (cx - 23, cy - 23, cx + 23, cy + 23)
        volume = _volume(256, box)
        bag = _bag(volume, encoder)
        probes = [square_probe(bag.feats, SQUARE_SLICE, gain) for gain in (3.0, 4.0)]  # a two-model ensemble
        ensemble = _ensemble(probes, encoder)
        scores, attention = ensemble.predict([bag])
        maps = scan_heatmaps(volume.hu, bag, attention[0], ensemble, encoder, top_k=2, method=method)
        assert maps.slice_index[0] == SQUARE_SLICE and maps.maps.shape == (2, 1, 256, 256)
        heat = maps.maps[0, 0].astype(np.float64)
        frame = BORDER_PX.get((name, method), 0)
        if frame:
            heat[:frame], heat[-frame:], heat[:, :frame], heat[:, -frame:] = (heat.min(),) * 4
        assert peak_in_box(heat, box), (name, box, peak(heat))


def test_the_map_is_the_gradient_through_the_models_own_forward():
    """The map of a CNN with average pooling, rebuilt by hand: w = ∂logit/∂e / (h·w) (the scaler's 1/σ included),
    cam = ReLU(Σ w_c A_c), upsampled; an ensemble's map is that of its mean logit."""
    torch.manual_seed(0)
    encoder = create_encoder("timm:test_resnet", image_size=64).eval()
    volume = _volume(64, (30, 10, 50, 30))
    bag = _bag(volume, encoder)
    rng = np.random.default_rng(1)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("abmil", bag.feats.shape[1], 2, hidden=8, dropout=0.0, standardize=True)
        model.scaler.fit([bag.feats * rng.uniform(0.5, 2.0)])
        models.append(model.eval())
    ensemble = _ensemble(models, encoder, TaskSpec("multilabel", ["a", "b"]))
    _, attention = ensemble.predict([bag])
    maps = scan_heatmaps(volume.hu, bag, attention[0], ensemble, encoder, top_k=1, method="gradcam")
    row = int(np.argmax(attention[0]))
    x = render_slices(volume.hu[[bag.slice_index[row]]], [WINDOW], 64, mean=encoder.mean, std=encoder.std)[:, 0]
    with torch.no_grad():
        a = encoder.forward_features(x)
    e = a.mean(dim=(2, 3)).requires_grad_(True)
    feats = torch.from_numpy(bag.feats).clone()
    feats[row] = 0
    bags = feats.unsqueeze(0) + torch.nn.functional.one_hot(torch.tensor([row]), len(bag)).float()[..., None] * e[:, None]
    mask, window = torch.ones(1, len(bag), dtype=torch.bool), torch.zeros(1, len(bag), dtype=torch.long)
    logits = torch.stack([m(bags, mask, window)[0] for m in models]).mean(0)
    raw = maps.raw()
    for t in range(2):
        (g,) = torch.autograd.grad(logits[0, t], e, retain_graph=True)
        cam = torch.relu((g[0, :, None, None] / (a.shape[2] * a.shape[3]) * a[0]).sum(0))
        want = upsample(cam[None], (64, 64), map_shift(encoder.encoder_name, 64))[0].numpy()  # 64-px slice
        np.testing.assert_allclose(raw[0, t], want, atol=2e-3 * want.max() + 1e-9)


def test_gradient_input_is_the_input_gradient_through_the_models_own_forward():
    """gradient × input rebuilt by hand: the slice rendered as for extraction, its embedding put into the bag,
    the two fold models' mean logit differentiated with respect to the input pixels, ReLU(Σ_c x_c g_c) smoothed and
    resized to the slice (48 × 40: rows ≠ columns)."""
    torch.manual_seed(0)
    encoder = create_encoder("resnet_tiny", image_size=32).eval()
    volume = _volume(48, (20, 10, 32, 22))
    volume.hu = np.ascontiguousarray(volume.hu[:, :, :40])
    bag = _bag(volume, encoder)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("abmil", bag.feats.shape[1], 2, hidden=8, dropout=0.0, standardize=True)
        model.scaler.fit([bag.feats])
        models.append(model.eval())
    ensemble = _ensemble(models, encoder, TaskSpec("multilabel", ["a", "b"]))
    _, attention = ensemble.predict([bag])
    maps = scan_heatmaps(volume.hu, bag, attention[0], ensemble, encoder, top_k=1)
    assert (maps.method, maps.layer) == ("gradient-input", "input")
    row = int(np.argmax(attention[0]))
    x = render_slices(volume.hu[[bag.slice_index[row]]], [WINDOW], 32, mean=encoder.mean, std=encoder.std)[:, 0]
    x.requires_grad_(True)
    feats = torch.from_numpy(bag.feats).clone()
    bags = torch.cat([feats[:row], encoder(x), feats[row + 1 :]])[None]
    mask, window = torch.ones(1, len(bag), dtype=torch.bool), torch.zeros(1, len(bag), dtype=torch.long)
    logits = torch.stack([m(bags, mask, window)[0] for m in models]).mean(0)
    raw = maps.raw()
    for t in range(2):
        (g,) = torch.autograd.grad(logits[0, t], x, retain_graph=True)
        contribution = torch.relu((g * x.detach()).sum(dim=1))
        want = upsample(gaussian_blur(contribution, SIGMA_PX), (48, 40))[0].numpy()
        np.testing.assert_allclose(raw[0, t], want, atol=2e-3 * want.max() + 1e-9)


def test_gradient_input_math():
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 1.0]]]])  # (1, 2 channels, 1, 2)
    g = torch.tensor([[[[2.0, 1.0]], [[-1.0, 1.0]]]])
    # pixel 0: 1·2 + 3·(−1) = −1 → 0; pixel 1: −2·1 + 1·1 = −1 → 0; flip the sign of g: 1 and 1
    assert gradient_input(x, g, 0.0).tolist() == [[[0.0, 0.0]]]
    assert gradient_input(x, -g, 0.0).tolist() == [[[1.0, 1.0]]]
    flat = torch.full((1, 9, 11), 2.0)
    np.testing.assert_allclose(gaussian_blur(flat, 1.5), flat)  # edges reflected: a constant stays constant
    spike = torch.zeros(1, 21, 21)
    spike[0, 10, 10] = 1.0
    blurred = gaussian_blur(spike, 2.0)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5) and blurred[0, 10, 10] == blurred.max()
    assert blurred[0, 10, 12] / blurred[0, 10, 10] == pytest.approx(np.exp(-0.5), rel=1e-4)  # sd 2 px
    assert torch.equal(gaussian_blur(spike, 0.0), spike)


def test_gradcam_math():
    a = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]], [[0.0, 3.0], [1.0, 0.0]]]])  # (1, 2, 2, 2)
    g = torch.stack([torch.full((2, 2), 2.0), torch.full((2, 2), -1.0)])[None]  # w = (2, -1)
    np.testing.assert_allclose(gradcam(a, g)[0].numpy(), [[2.0, 0.0], [0.0, 4.0]])  # ReLU(2·A₀ − A₁)
    up = upsample(torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]), (4, 6))
    assert up.shape == (1, 4, 6) and up[0, :, 0].eq(0).all() and up[0, :, -1].eq(1).all()
    maps = torch.zeros(2, 2, 3, 3)
    maps[0, 0, 1, 1], maps[1, 0, 0, 0] = 4.0, 2.0
    normalised, scale = normalise_per_target(maps)
    assert scale.tolist() == [4.0, 1.0] and normalised[1, 0, 0, 0] == 0.5  # the weaker slice stays weaker
    assert normalise_per_target(torch.zeros(0, 2, 3, 3))[1].tolist() == [1.0, 1.0]  # no instance: no scale
    out = torch.tensor([[0.5, 2.0]])
    assert target_logits(TaskSpec("binary", ["y"], classes=["0", "1"]), out).tolist() == [[1.5]]
    assert target_logits(TaskSpec("multilabel", ["a", "b"]), out).tolist() == [[0.5, 2.0]]


def test_upsample_places_each_cell_at_its_field_centre():
    cell = torch.zeros(1, 4, 4)
    cell[0, 1, 2] = 1.0  # on a 32-px grid its geometric centre is (11.5, 19.5)
    plain, moved = upsample(cell, (32, 32)), upsample(cell, (32, 32), (-4.0, 2.0))
    np.testing.assert_allclose(peak(plain.numpy()[0]), (11.5, 19.5))
    np.testing.assert_allclose(peak(moved.numpy()[0]), (7.5, 21.5))
    np.testing.assert_allclose(upsample(cell, (32, 32), (0.0, 0.0)), plain)


def test_map_shift_is_the_receptive_field_geometry():
    # resnet_tiny: a stride-2 stem, a stride-2 max pool and two stride-2 stages, all padded on both sides, each
    # centre a cell's field half a step of its input up and left: 0.5 · (1 + 2 + 4 + 8) = 7.5 input pixels
    for size in (64, 96):
        np.testing.assert_allclose(map_shift("resnet_tiny", size), (-7.5, -7.5), atol=0.5)
    assert map_shift("timm:test_vit", 64) == (0.0, 0.0)  # token maps: attention mixes globally, no local centre


def test_pointing_game_parts():
    assert grow_box((10, 20, 30, 60)) == (5.0, 10.0, 35.0, 70.0)
    m = np.zeros((100, 100), np.float32)
    m[40, 37] = 1.0
    assert peak(m) == (40.0, 37.0) and peak(np.zeros((4, 4))) is None
    assert peak_in_box(m, (40, 30, 60, 50))  # x 37 lies left of the box (40), inside the grown one (35)
    assert not peak_in_box(m, (40, 30, 60, 50), grow=0.0)
    flat = np.zeros((64, 64), np.float32)
    flat[:8, 56:] = 1.0  # a flat top at an edge counts at its middle
    assert peak(flat) == (3.5, 59.5)
    score = pointing_game([(m, (40, 30, 60, 50)), (m, (0, 0, 10, 10)), (np.zeros((100, 100)), (0, 0, 100, 100))])
    assert (score.hits, score.slices) == (1, 3) and score.share == pytest.approx(1 / 3)
    boxes = [LesionBox("s", 10, 0, 0, 5, 5, "liver", 8, 12), LesionBox("s", 20, 1, 1, 6, 6, "lung")]
    assert lesion_on_slice(boxes, 9).label == "liver" and lesion_on_slice(boxes, 20).label == "lung"
    assert lesion_on_slice(boxes, 15) is None


@pytest.mark.parametrize("method, side, vertebra", [("gradient-input", 12, True), ("gradcam", 32, False)])
def test_the_pointing_game_finds_a_planted_square_from_the_files_the_demo_writes(tmp_path, method, side, vertebra):
    """The demo's geometry end to end: 128-px DICOM slices embedded at 96 px (resnet_tiny, random init), a square
    the size of a demo lesion (gradient × input) or of a 6 × 6 map cell (Grad-CAM) off-centre in one scan and
    transposed in the other, fold models saved as crossval writes them, ``clearct attention --heatmaps`` and the
    demo's pointing game on its heatmap files and lesions.csv (synth's convention: x2, y2 one past the last pixel).
    A swapped axis, a wrong resize or a misplaced map misses one of the squares. Gradient × input also has to
    ignore a brighter block in every slice (a vertebra) that cannot raise the score; Grad-CAM's peak lands on
    that block in the transposed scan (its channel weights are spatial means: every bright structure of the
    weighted channels shows, docs/interpret.md), so its case has none."""
    scans, feats, cv, att = (tmp_path / name for name in ("scans", "feats", "cv", "att"))
    rows, lesions = [], []
    for n, (cy, cx) in enumerate(((40, 84), (84, 40))):
        box = (cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)
        volume = _volume(128, box)
        if vertebra:  # bright in every slice, so it cannot raise the score
            volume.hu[:, 98:114, 56:72] = 400
        volume.hu[:, -1, -1] = -1  # CT has values below 0 HU (reading refuses label maps without); windowed ≈ tissue
        volume.scan_id, volume.patient_id = f"s{n}", f"p{n}"
        write_scan(volume, scans / f"s{n}", "dicom", uid_key=f"pointing-{n}")
        rows.append({"scan_id": f"s{n}", "patient_id": f"p{n}", "path": f"s{n}"})
        lesions.append({"scan_id": f"s{n}", "slice_index": SQUARE_SLICE, "x1": box[0], "y1": box[1], "x2": box[2],
                        "y2": box[3], "label": "liver", "slice_first": SQUARE_SLICE, "slice_last": SQUARE_SLICE})
    write_csv(scans / "scans.csv", rows)
    write_csv(tmp_path / "lesions.csv", lesions)
    window = f"{WINDOW.name}:{WINDOW.lo:g}:{WINDOW.hi:g}"
    assert main(["extract", "--scans", str(scans / "scans.csv"), "--encoder", "resnet_tiny", "--image-size", "96",
                 "--windows", window, "--out", str(feats), "--device", "cpu", "--workers", "0"]) == 0
    cohort = load_cohort(feats, None, None, dtype=np.float32)
    stacked = np.concatenate([b.feats for b in cohort.bags])
    squares = [sum(len(b) for b in cohort.bags[:i]) + int(np.flatnonzero(b.slice_index == SQUARE_SLICE)[0])
               for i, b in enumerate(cohort.bags)]
    spec = TaskSpec("multilabel", ["liver"])
    for fold, gain in enumerate((3.0, 4.0)):
        model = square_probe(stacked, squares, gain)
        meta = model_meta(job=f"fold-{fold}", settings=MilTraining(hidden=3, dropout=0.0), spec=spec,
                          in_dim=stacked.shape[1], windows=[[WINDOW.name, WINDOW.lo, WINDOW.hi]],
                          encoder=cohort.encoder, thresholds=[0.5], train=[], val=[], seed=fold, fingerprint="",
                          history=[])
        save_model(cv / f"fold-{fold}", model, meta)
    assert main(["attention", "--model", str(cv), "--features", str(feats), "--scans", str(scans / "scans.csv"),
                 "--lesions", str(tmp_path / "lesions.csv"), "--out", str(att), "--heatmaps", "--heatmap-method",
                 method, "--top-k", "1", "--figures", "0", "--device", "cpu"]) == 0
    score = heatmap_pointing(att / "heatmaps", tmp_path / "lesions.csv")
    assert (score.scans, score.instances) == (2, 2)
    assert (score.total.hits, score.total.slices) == (2, 2), [
        (h.scan_id, peak(h.maps[0, 0])) for h in map(read_heatmaps, sorted((att / "heatmaps").glob("*.h5")))]


# ---- every registry encoder ------------------------------------------------------------------------------------

TIMM_EXAMPLES = ["timm:test_resnet", "timm:test_vit", "timm:test_convnext", "timm:test_efficientnet"]
THREE_D = {"merlin", "ctclip", "drasclr"}  # no slice map: 3D volumes, 3D patches
HEAVY = {"sam2_hiera_large", "biomedclip"}  # 10-20 s each on 2 busy cores


def _registry_2d() -> list:
    names = []
    for name in list_encoders():
        if name == "timm:<name>":
            names += TIMM_EXAMPLES
        elif name not in THREE_D:
            names.append(pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name)
    return names


@pytest.mark.parametrize("method", ["gradient-input", "gradcam"])
@pytest.mark.parametrize("name", _registry_2d())
@pytest.mark.slow
def test_every_2d_registry_encoder_gives_a_map_of_the_slice_shape(name, method):
    if name in ("biomedclip", "sam2_hiera_large"):
        pytest.importorskip("open_clip" if name == "biomedclip" else "transformers")
    torch.manual_seed(0)
    try:
        encoder = create_encoder(name, image_size=64)
    except ClearctError:  # a fixed-size foundation baseline: its own size
        encoder = create_encoder(name)
    encoder.eval()
    volume = _volume(48, (30, 10, 40, 20), slices=3)
    volume.hu = np.ascontiguousarray(volume.hu[:, :, :40])  # rows ≠ columns: the map must not swap them
    bag = _bag(volume, encoder)
    torch.manual_seed(1)
    model = build_model("abmil", bag.feats.shape[1], 3, hidden=8, dropout=0.0, standardize=True)
    model.scaler.fit([bag.feats])
    ensemble = _ensemble([model.eval()], encoder, TaskSpec("multiclass", ["kind"], classes=["a", "b", "c"]))
    _, attention = ensemble.predict([bag])
    maps = scan_heatmaps(volume.hu, bag, attention[0], ensemble, encoder, top_k=2, method=method)
    assert maps.maps.shape == (2, 3, 48, 40) and np.isfinite(maps.maps.astype(np.float32)).all()
    assert maps.encoder == encoder.encoder_name and maps.method == method
    assert maps.layer == "input" if method == "gradient-input" else maps.layer.endswith((":input", ":output"))
    assert maps.maps.max() > 0  # not an all-zero map: gradients reached the input or the tapped map


@pytest.mark.parametrize("name", ["drasclr", "merlin"])
@pytest.mark.slow
def test_3d_and_patch_encoders_have_no_map(name):
    if name == "merlin":
        pytest.importorskip("merlin")
    encoder = create_encoder(name)
    with pytest.raises(ClearctError) as err:
        spatial_tap(encoder)
    assert str(err.value) == f"{name} has no spatial feature map; heatmaps need a 2D encoder with one"
    with pytest.raises(ClearctError) as err:
        heatmap_layer(encoder, "gradient-input")
    assert str(err.value) == f"{name} does not embed single slices; heatmaps need a 2D slice encoder"


# ---- the file ------------------------------------------------------------------------------------------------

def test_the_h5_file_keeps_its_documented_names(tmp_path):
    rng = np.random.default_rng(0)
    h = ScanHeatmaps(maps=rng.random((3, 2, 20, 30)).astype(np.float16), slice_index=np.array([7, 3, 7]),
                     window=np.array([0, 1, 1]), attention=np.array([0.5, 0.3, 0.1]), targets=["liver", "lung"],
                     windows=[("lung", -1500.0, 500.0), ("abdomen", -175.0, 275.0)], method="gradcam",
                     layer="blocks.10:input", encoder="vit_conv_base", weights_sha256="ab" * 32, scan_id="s1",
                     scale=[0.25, 2.0])
    path = write_heatmaps(tmp_path / "heatmaps" / "s1.h5", h)
    assert not list(path.parent.glob("*.tmp"))
    with h5py.File(path) as f:
        assert sorted(f) == ["attention", "maps", "slice_index", "window"]
        assert (f["maps"].dtype, f["maps"].shape) == (np.float16, (3, 2, 20, 30))
        assert (f["slice_index"].dtype, f["window"].dtype, f["attention"].dtype) == (np.int32, np.int8, np.float32)
        assert json.loads(f.attrs["targets"]) == ["liver", "lung"]
        assert json.loads(f.attrs["windows"]) == [["lung", -1500.0, 500.0], ["abdomen", -175.0, 275.0]]
        assert {k: str(f.attrs[k]) for k in ("method", "layer", "encoder", "scan_id")} == {
            "method": "gradcam", "layer": "blocks.10:input", "encoder": "vit_conv_base", "scan_id": "s1"}
        assert f.attrs["weights_sha256"] == "ab" * 32
    back = read_heatmaps(path)
    np.testing.assert_array_equal(back.maps, h.maps)
    assert back.slice_index.tolist() == [7, 3, 7] and back.window.tolist() == [0, 1, 1]
    assert back.targets == h.targets and back.windows == h.windows and back.scale == [0.25, 2.0]
    np.testing.assert_allclose(back.raw()[:, 1], h.maps[:, 1].astype(np.float32) * 2.0)
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("maps", data=np.zeros((1, 1, 2, 2)))
    with pytest.raises(ClearctError, match="bad.h5: not a clearct heatmap file .*slice_index"):
        read_heatmaps(tmp_path / "bad.h5")


def test_overlays_one_png_per_instance(tmp_path):
    torch.manual_seed(0)
    encoder = create_encoder("resnet_tiny", image_size=64).eval()
    volume = _volume(64, (20, 20, 40, 40))
    bag = _bag(volume, encoder)
    ensemble = _ensemble([square_probe(bag.feats, SQUARE_SLICE)], encoder)
    scores, attention = ensemble.predict([bag])
    maps = scan_heatmaps(volume.hu, bag, attention[0], ensemble, encoder, top_k=3)
    path = write_scan_heatmaps(tmp_path, maps, volume.hu, {"square": float(scores[0, 0])})
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert path.name == "scan.h5" and len(pngs) == 3 and "scan-slice0002-soft.png" in pngs


# ---- the command line --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_predict_and_attention_write_heatmaps(tmp_path, capsys):
    cohort, feats, cv = tmp_path / "cohort", tmp_path / "feats", tmp_path / "cv"
    assert main(["synth", str(cohort), "--patients", "8", "--size", "48", "--slices", "6", "--format", "nifti",
                 "--workers", "1", "--unannotated", "0"]) == 0
    assert main(["extract", "--scans", str(cohort / "scans.csv"), "--encoder", "mambaout_test", "--out", str(feats),
                 "--device", "cpu", "--workers", "0"]) == 0
    assert main(["crossval", "--features", str(feats), "--labels", str(cohort / "labels.csv"), "--targets",
                 "lung,liver", "--folds", "2", "--epochs", "2", "--min-steps", "4", "--bootstrap", "10",
                 "--device", "cpu", "--out", str(cv)]) == 0
    with open(cohort / "scans.csv") as fh:
        first = next(csv.DictReader(fh))
    out = tmp_path / "pred"
    assert main(["predict", str(cohort / first["path"]), "--model", str(cv), "--encoder", "mambaout_test",
                 "--out", str(out), "--device", "cpu", "--top-k", "3"]) == 0
    result = json.loads((out / "prediction.json").read_text())
    maps = read_heatmaps(out / result["heatmaps"])
    assert maps.maps.shape == (3, 2, 48, 48) and maps.targets == ["lung", "liver"]
    assert maps.encoder == "mambaout_test" and maps.layer == "input" and maps.method == "gradient-input"
    assert len(list((out / "heatmaps").glob("*.png"))) == 3
    assert main(["predict", str(cohort / first["path"]), "--model", str(cv), "--encoder", "mambaout_test",
                 "--out", str(tmp_path / "plain"), "--device", "cpu", "--no-heatmaps"]) == 0
    assert not (tmp_path / "plain" / "heatmaps").exists()

    # attention rebuilds the random-init encoder from the models' record; heatmaps need the CT
    att = tmp_path / "att"
    assert main(["attention", "--model", str(cv), "--features", str(feats), "--out", str(att), "--heatmaps",
                 "--device", "cpu"]) == 2
    assert "--heatmaps needs --scans" in capsys.readouterr().err
    assert main(["attention", "--model", str(cv), "--features", str(feats), "--scans", str(cohort / "scans.csv"),
                 "--out", str(att), "--heatmaps", "--figures", "1", "--top-k", "2", "--device", "cpu"]) == 0
    assert len(list((att / "heatmaps").glob("*.h5"))) == 8 and len(list((att / "heatmaps").glob("*.png"))) == 2
    assert main(["attention", "--model", str(cv), "--features", str(feats), "--scans", str(cohort / "scans.csv"),
                 "--out", str(tmp_path / "att-cam"), "--heatmaps", "--heatmap-method", "gradcam", "--figures", "0",
                 "--top-k", "1", "--device", "cpu"]) == 0
    cam = read_heatmaps(next((tmp_path / "att-cam" / "heatmaps").glob("*.h5")))
    assert (cam.method, cam.layer) == ("gradcam", "head:input")
    # another encoder than the models' is refused with one line
    assert main(["attention", "--model", str(cv), "--features", str(feats), "--scans", str(cohort / "scans.csv"),
                 "--out", str(att), "--heatmaps", "--encoder", "resnet_tiny", "--device", "cpu"]) == 2
    assert "models were trained on mambaout_test" in capsys.readouterr().err
