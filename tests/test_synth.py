"""clearct synth: files read back exactly, boxes lie on lesions, tables match the drawn truth, determinism, errors."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydantic import ValidationError

from clearct.config import SynthConfig, SynthSettings
from clearct.io import read_ct, read_labels_table, read_lesions_table, read_scans_table
from clearct.synth import LOCATIONS, LUNG_FINDINGS, generate_cohort
from clearct.synth import canvas as C
from clearct.synth.cohort import render_patient

SMALL = {"size": 64, "slices": 16}
RENDER = SynthSettings(**SMALL)


def _render(seed: int, index: int, with_findings: bool = True, **settings):
    return render_patient(seed, index, RENDER.model_copy(update=settings), with_findings=with_findings)


def _synth(out: Path, **settings) -> dict:
    return generate_cohort(SynthConfig(out=out, **settings), progress=False)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    """The same 3-patient cohort in every format."""
    root = tmp_path_factory.mktemp("synth")
    out = {}
    for fmt in ("dicom", "nifti", "png"):
        out[fmt] = root / fmt
        _synth(out[fmt], patients=3, seed=7, format=fmt, workers=1, **SMALL)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("fmt", ["dicom", "nifti", "png"])
def test_every_format_reads_back_to_the_generated_hu(cohorts, fmt):
    scans = read_scans_table(cohorts[fmt] / "scans.csv")
    assert len(scans) == 3
    for i, rec in enumerate(scans):
        truth = _render(7, i).volume
        vol = read_ct(rec.path)
        assert vol.hu.dtype == np.int16
        np.testing.assert_array_equal(vol.hu, truth.hu)
        np.testing.assert_allclose(vol.spacing_mm, truth.spacing_mm, rtol=1e-5)
        if fmt != "png":  # DeepLesion PNG folders carry no absolute z
            np.testing.assert_allclose(vol.z_mm, truth.z_mm, atol=1e-3)
        assert not vol.warnings, vol.warnings


def test_files_are_in_contract_orientation(cohorts):
    """Liver on patient right (low columns), spine posterior (high rows), slices inferior → superior on disk."""
    ph = _render(7, 0, scan_range="cap")
    z_, rows, cols = np.nonzero(ph.organ == C.LIVER)
    assert cols.mean() < ph.organ.shape[2] / 2
    _, rows, _ = np.nonzero(ph.organ == C.CANAL)
    assert rows.mean() > ph.organ.shape[1] / 2
    folder = cohorts["dicom"] / "scans" / "s7p0001_ct"
    files = sorted(folder.glob("*.dcm"))
    ds = [pydicom.dcmread(f) for f in files]
    assert [float(d.ImagePositionPatient[2]) for d in ds] == sorted(float(d.ImagePositionPatient[2]) for d in ds)
    assert ds[0].SOPClassUID == pydicom.uid.CTImageStorage and ds[0].file_meta.TransferSyntaxUID
    assert [float(v) for v in ds[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert ds[0].PatientID == "s7p0001" and ds[0].RescaleIntercept == -1024
    assert len({d.SOPInstanceUID for d in ds}) == len(ds) and len({d.SeriesInstanceUID for d in ds}) == 1
    img = nib.load(cohorts["nifti"] / "scans" / "s7p0001_ct.nii.gz")
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")


def test_boxes_lie_on_lesions():
    """In each key-slice box the HU moves from the lesion-free render in the lesion's direction, and the box
    differs from a ring of the host organ around it in that direction too."""
    knobs = {"location_prevalence": 1.0, "lung_prevalence": 0.0, "primary_tumour": 1.0}
    checked = set()
    for i in range(3):
        render = {"size": 96, "slices": 24, "scan_range": "cap", **knobs}
        ph = _render(3, i, **render)
        clean = _render(3, i, with_findings=False, **render)
        for les in ph.findings.lesions:
            x1, y1, x2, y2 = les.box
            k = les.key_slice
            sign = np.sign(les.lesion_hu - les.host_hu)
            box = ph.volume.hu[k, y1:y2, x1:x2].astype(float)
            before = clean.volume.hu[k, y1:y2, x1:x2].astype(float)
            # the lesion's pixels that were its host organ (exophytic lesions also grow into neighbouring tissue)
            was_host = (ph.organ[k, y1:y2, x1:x2] == C.LESION) & np.isin(clean.organ[k, y1:y2, x1:x2], les.host_codes)
            assert sign * (box[was_host].mean() - before[was_host].mean()) > 0.2 * abs(les.lesion_hu - les.host_hu), les
            ring = np.zeros(ph.organ.shape[1:], dtype=bool)
            ring[max(y1 - 3, 0):y2 + 3, max(x1 - 3, 0):x2 + 3] = True
            ring[y1:y2, x1:x2] = False
            ring &= np.isin(ph.organ[k], les.host_codes)
            lesion = ph.organ[k, y1:y2, x1:x2] == C.LESION  # a box at an organ border holds other tissue too
            if ring.sum() >= 4:
                assert sign * (box[lesion].mean() - ph.volume.hu[k][ring].mean()) > 0, les
            checked.add(les.location)
    assert checked >= {"lung", "liver", "mediastinum", "bone", "soft_tissue"}


def test_tables_match_the_drawn_findings(cohorts):
    out = cohorts["dicom"]
    labels = read_labels_table(out / "labels.csv")
    assert labels.id_column == "patient_id" and labels.ids == ["s7p0001", "s7p0002", "s7p0003"]
    for name in (*LOCATIONS, *LUNG_FINDINGS, "stage_high"):
        assert set(labels.column(name)) <= {"0", "1"}
    lesions = read_lesions_table(out / "lesions.csv")
    summary_rows = _rows(out / "lesions.csv")
    for i, pid in enumerate(labels.ids):
        ph = _render(7, i)
        f = ph.findings
        for loc in LOCATIONS:
            assert labels.column(loc)[i] == str(f.locations[loc])
            assert f.locations[loc] == any(les.location == loc for les in f.lesions)
        for name in LUNG_FINDINGS:
            assert labels.column(name)[i] == str(f.lung[name])
        assert (labels.column("effusion")[i] == "1") == bool((ph.organ == C.EFFUSION).any())
        assert labels.column("stage_high")[i] == str(f.stage_high)
        mine = [b for b in lesions if b.scan_id == f"{pid}_ct"]
        assert len(mine) in (0, len(f.lesions))  # an annotated scan lists every lesion, else none
        for box, les in zip(mine, f.lesions):
            assert (box.slice_index, box.label) == (les.key_slice, les.location)
            assert (box.x1, box.y1, box.x2, box.y2) == les.box
            assert 0 <= box.x1 < box.x2 <= 64 and 0 <= box.y1 < box.y2 <= 64 and 0 <= box.slice_index < 16
    assert len(summary_rows) == len(lesions)


def test_every_lung_finding_changes_the_lungs():
    render = {"scan_range": "chest", "lung_prevalence": 1.0, "location_prevalence": 0.0, "primary_tumour": 0.0}
    ph = _render(11, 0, **render)
    clean = _render(11, 0, with_findings=False, **render)
    assert all(ph.findings.lung[name] == 1 for name in LUNG_FINDINGS)
    lung = np.isin(clean.organ, (C.LUNG, C.LUNG_VESSEL))
    assert (ph.volume.hu[lung] < -950).sum() > (clean.volume.hu[lung] < -950).sum()  # emphysema
    assert (ph.volume.hu[lung] > 300).sum() > (clean.volume.hu[lung] > 300).sum()  # calcification
    assert ph.volume.hu[lung].mean() > clean.volume.hu[lung].mean() + 20  # effusion, opacity, atelectasis


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix != ".log" and p.name != "config.yaml":
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("fmt", ["dicom", "nifti"])
def test_same_seed_gives_identical_files(tmp_path, fmt):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        _synth(tmp_path / name, patients=2, seed=seed, format=fmt, workers=1,
                        size=48, slices=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_rerun_reuses_finished_scans_and_worker_pool_matches(tmp_path):
    out = tmp_path / "c"
    _synth(out, patients=3, seed=2, workers=2, size=48, slices=8)
    first = _digest(out)
    stamp = (out / "scans" / "s2p0002_ct" / "IM0001.dcm").stat().st_mtime_ns
    _synth(out, patients=3, seed=2, workers=1, size=48, slices=8)
    assert (out / "scans" / "s2p0002_ct" / "IM0001.dcm").stat().st_mtime_ns == stamp
    assert _digest(out) == first
    solo = tmp_path / "solo"
    _synth(solo, patients=3, seed=2, workers=1, size=48, slices=8)
    assert _digest(solo) == first


def test_external_preset_changes_acquisition_not_anatomy():
    std = _render(4, 0)
    ext = _render(4, 0, acquisition="external")
    assert np.array_equal(std.organ, ext.organ)
    body = std.organ != C.AIR
    assert abs(float(ext.volume.hu[body].mean() - std.volume.hu[body].mean()) - 8.0) < 6.0
    air = (std.organ == C.AIR)
    assert ext.volume.hu[air].std() > std.volume.hu[air].std() * 1.3
    assert ext.volume.meta["slice_thickness_mm"] > std.volume.meta["slice_thickness_mm"]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"format": "analyze"}, "format"),
    ({"lesion_size_mm": (30, 5)}, "lesion_size_mm"),
    ({"location_prevalence": 1.5}, "location_prevalence"),
    ({"scan_range": "head"}, "scan_range"),
    ({"lesion_colour": 3}, "lesion_colour"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, kwargs, field):
    with pytest.raises(ValidationError) as err:
        SynthConfig(out=tmp_path / "x", patients=1, **kwargs)
    assert [e["loc"][0] for e in err.value.errors()] == [field]
    assert not (tmp_path / "x").exists()


def test_cli_writes_a_cohort_and_rejects_bad_input(tmp_path):
    cmd = [sys.executable, "-m", "clearct", "synth", str(tmp_path / "c"), "--patients", "2", "--size", "40",
           "--slices", "6", "--format", "png", "--workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(read_scans_table(tmp_path / "c" / "scans.csv")) == 2
    assert (tmp_path / "c" / "scans" / "DL_info.csv").is_file() and (tmp_path / "c" / "config.yaml").is_file()
    bad = subprocess.run(cmd[:5] + ["--lesion-size-mm", "40,5"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "lesion_size_mm" in bad.stderr


def test_montage_is_a_png_with_one_row_per_patient(tmp_path):
    from PIL import Image

    from clearct.synth.montage import draw_montage

    path = draw_montage(tmp_path / "m.png", patients=2, size=48, slices=12, per_patient=2)
    with Image.open(path) as img:
        width, height = img.size
    assert img.format == "PNG" and width > height > 200


def test_lower_lesion_contrast_makes_lesions_fainter():
    render = {"scan_range": "cap", "location_prevalence": 1.0, "lung_prevalence": 0.0, "primary_tumour": 0.0}
    strong = _render(9, 0, **render).findings.lesions
    faint = _render(9, 0, lesion_contrast=0.3, **render).findings.lesions
    assert [les.location for les in strong] == [les.location for les in faint]
    for a, b in zip(strong, faint):
        assert abs(b.lesion_hu - b.host_hu) < 0.5 * abs(a.lesion_hu - a.host_hu)
