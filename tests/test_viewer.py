"""viewer.html: built from a synthetic scan with attention, heatmaps and lesion boxes, then driven in a real
browser (Debian's chromium through playwright, offline): slider, wheel, overlay and its opacity, target
selector, the click on the attention curve, and no network request at all."""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearct.config import SynthSettings
from clearct.io.heatmaps import read_heatmaps
from clearct.io.tables import LesionBox
from clearct.report.viewer import AttentionProfile, Prediction, ViewerScan, viewer_html, write_viewer
from clearct.synth.cohort import render_patient
from heatmap_files import hot_square_maps, write_heatmap_file

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WINDOWS = [("lung", -1500.0, 500.0), ("abdomen", -175.0, 275.0)]
HOT = (60, 100, 150, 190)  # rows, cols of the heatmaps' hot square on the 256² grid
HEAT_SLICES = [20, 30, 40, 41, 42, 50]


def _scan(tmp_path: Path, z: int = 64, size: int = 256) -> ViewerScan:
    vol = render_patient(0, 0, SynthSettings(size=size, slices=z)).volume
    s = np.arange(z)
    profile = np.exp(-0.5 * ((s - 40) / 3.0) ** 2) + 0.02
    attn = np.concatenate([profile, 0.4 * profile])
    attn /= attn.sum()
    path = write_heatmap_file(tmp_path / "heatmaps" / f"{vol.scan_id}.h5", scan_id=vol.scan_id,
                              maps=hot_square_maps(HEAT_SLICES, (size, size), HOT),
                              slice_index=HEAT_SLICES, window=[0] * len(HEAT_SLICES),
                              attention=attn[HEAT_SLICES], targets=["nodule", "effusion"], windows=WINDOWS)
    return ViewerScan(
        scan_id=vol.scan_id, hu=vol.hu, z_mm=vol.z_mm, spacing_mm=vol.spacing_mm, windows=WINDOWS,
        attention=AttentionProfile(np.concatenate([s, s]), np.repeat([0, 1], z), attn, ["lung", "abdomen"]),
        heatmaps=read_heatmaps(path),
        lesions=[LesionBox(vol.scan_id, 40, 150, 60, 190, 100, "nodule", 38, 42)],
        predictions=[Prediction("nodule", 0.8123, 0.41, True), Prediction("effusion", 0.1234, 0.37, False)],
        identity={"model folder": "/runs/cv", "folds": "5", "encoder": "vit_conv_test · random-init · 224 px",
                  "clearct version": "0.1.0"},
        notes=["random-init encoder: features are not pretrained"])


@pytest.fixture(scope="module")
def browser_page():
    """A fresh headless chromium page (own profile, no sandbox, nothing downloaded)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                       args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 900})
        yield context.new_page()
        context.close()


def _slice(page) -> int:
    return int(page.inner_text("#sliceIndex"))


def _stage_pixels(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator("#stage").screenshot())).convert("RGB"), np.float32)


@pytest.mark.slow
def test_viewer_in_chromium(tmp_path: Path, browser_page) -> None:
    page = browser_page
    scan = _scan(tmp_path)
    html_path = write_viewer(tmp_path / "viewer.html", scan)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(html_path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert _slice(page) == 40  # opens on the most attended slice

    page.locator("#slider").fill("20")
    assert _slice(page) == 20 and page.get_attribute("#overlay", "data-slice") == "20"
    assert page.is_visible("#overlay")
    page.locator("#slider").fill("10")
    assert _slice(page) == 10 and not page.is_visible("#overlay")  # no heatmap on slice 10
    assert "no heatmap" in page.inner_text("#overlayNote")

    box = page.locator("#stage").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)
    page.wait_for_function("document.getElementById('sliceIndex').textContent === '11'")
    page.mouse.wheel(0, -120)
    page.wait_for_function("document.getElementById('sliceIndex').textContent === '10'")

    # the click on the attention curve jumps to the slice under the pointer
    plot = page.locator("#plotArea").bounding_box()
    page.mouse.click(plot["x"] + plot["width"] * 30 / 63, plot["y"] + plot["height"] / 2)
    assert _slice(page) == 30
    marker = float(page.get_attribute("#marker", "x1"))
    assert marker == pytest.approx(44 + 30 / 63 * (628 - 44), abs=0.01)

    # the overlay shows where the heatmap is hot, and only there; the opacity control fades it
    page.locator("#slider").fill("40")
    page.locator("#opacity").fill("0")
    plain = _stage_pixels(page)
    page.locator("#opacity").fill("100")
    assert float(page.eval_on_selector("#overlay", "e => getComputedStyle(e).opacity")) == 1.0
    lit = _stage_pixels(page)
    scale = plain.shape[0] / 256
    r0, r1, c0, c1 = (round(v * scale) for v in HOT)
    diff = np.abs(lit - plain).mean(axis=2)
    inside = diff[r0 + 4:r1 - 4, c0 + 4:c1 - 4].mean()
    outside = np.concatenate([diff[: r0 - 8].ravel(), diff[r1 + 24:].ravel()]).mean()  # target 1 is 8 px lower
    assert inside > 40 and outside < 2, (inside, outside)
    page.locator("#opacity").fill("50")
    half = _stage_pixels(page)
    assert 0.3 < np.abs(half - plain).mean(axis=2)[r0 + 4:r1 - 4, c0 + 4:c1 - 4].mean() / inside < 0.7

    # lesion box on the key slice (solid) and on its extent; none outside it
    assert page.locator("#boxes rect.lesion").count() == 1
    assert page.get_attribute("#boxes rect.lesion", "stroke-dasharray") == ""
    page.locator("#slider").fill("42")
    assert page.get_attribute("#boxes rect.lesion", "stroke-dasharray") == "4 3"
    page.locator("#slider").fill("45")
    assert page.locator("#boxes rect.lesion").count() == 0

    # the target selector switches the overlay; the window buttons switch the CT image
    page.locator("#slider").fill("40")
    first = page.get_attribute("#overlay", "src")
    page.select_option("#target", "1")
    assert page.get_attribute("#overlay", "src") != first and "effusion" in page.inner_text("#overlayNote")
    lung = page.get_attribute("#ct", "src")
    page.click("#windowButtons button[data-window='1']")
    assert page.get_attribute("#ct", "src") != lung
    assert "(computed in the lung window)" in page.inner_text("#overlayNote")
    page.click("#windowButtons button[data-window='0']")
    page.select_option("#target", "0")
    page.locator("#opacity").fill("60")

    text = page.inner_text("#side")
    assert "0.812" in text and "0.410" in text and "positive" in text and "negative" in text
    assert "vit_conv_test · random-init · 224 px" in text and "random-init encoder" in text
    assert all(u.startswith(("file:", "data:")) for u in requests), [u for u in requests if "data:" not in u]
    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] >= 1000
    if target := _docs_target():
        shutil.copy(shot, target)


def _docs_target() -> Path | None:
    """CLEARCT_VIEWER_SCREENSHOT=1 refreshes docs/viewer.png from this test."""
    import os

    return Path(__file__).resolve().parents[1] / "docs" / "viewer.png" if os.environ.get(
        "CLEARCT_VIEWER_SCREENSHOT") else None


def test_viewer_is_self_contained_and_light(tmp_path: Path) -> None:
    scan = _scan(tmp_path, size=128)
    scan.scan_id = "a</script><b>{{JS}}"  # ids come from user tables: they must not break out of the page
    page = viewer_html(scan)
    assert "<script src" not in page and "<link" not in page and not re.search(r"(src|href)=\"?https?:", page)
    assert page.count("</script>") == 2 and "a&lt;/script&gt;&lt;b&gt;{{JS}}" in page
    uris = re.findall(r"data:image/webp;base64,", page)
    assert len(uris) == 64 * 2 + len(HEAT_SLICES) * 2  # every slice in both windows + every overlay
    assert len(page) < 64 * 2 * 12_000  # well under 12 kB per 128² slice image


def test_viewer_without_attention_heatmaps_or_lesions(tmp_path: Path) -> None:
    hu = np.full((3, 40, 60), -1000, np.int16)
    page = viewer_html(ViewerScan("plain", hu, np.arange(3.0), (2.0, 1.0, 1.0), WINDOWS[:1]), fmt="jpeg")
    assert page.count("data:image/jpeg;base64,") == 3 and "data:image/webp" not in page
    assert '"attention":null' in page and '"heatmaps":null' in page


def test_heatmap_grid_must_match_the_slices(tmp_path: Path) -> None:
    path = write_heatmap_file(tmp_path / "h.h5", scan_id="s", maps=np.zeros((1, 1, 8, 8), np.float16),
                              slice_index=[0], window=[0], attention=[1.0], targets=["t"], windows=WINDOWS[:1])
    hu = np.zeros((2, 16, 16), np.int16)
    with pytest.raises(Exception, match="8×8 but the slices are 16×16"):
        viewer_html(ViewerScan("s", hu, np.arange(2.0), (1.0, 1.0, 1.0), WINDOWS[:1], heatmaps=read_heatmaps(path)))
