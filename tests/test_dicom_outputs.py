"""Results as DICOM (inference/dicom_outputs.py): SR, KOS and parametric maps written for a synthetic DICOM series,
a series stored flipped and out of order, and a real series; read back with highdicom/pydicom, validated with
dciodvfy (dicom3tools), and every reference checked against the source instances."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from clearct.cli import main
from clearct.common.errors import ClearctError
from clearct.inference.dicom_outputs import Provenance, top_slices, write_dicom_outputs
from clearct.io import read_ct
from clearct.report.viewer import Prediction
from ct_dicom import rewrite, write_slice
from heatmap_files import write_heatmap_file

hd = pytest.importorskip("highdicom", reason="highdicom is not installed (pip install highdicom)")

PROV = Provenance("/runs/cv", 5, "vit_conv_test", "ab" * 32, 224, "multilabel")
PREDICTIONS = [Prediction("nodule", 0.8125, 0.4375, True), Prediction("effusion", 0.125, 0.375, False)]
# what dciodvfy still says about the objects (warnings only), and why:
KNOWN_WARNINGS = (
    r"Unrecognized defined term <99CLEARCT>",  # clearct's private coding scheme, declared in the SR's header
    r"Unrecognized defined term <QUANTITY> for value 4 of attribute <(Image|Frame) Type>",  # PM's own term
    r"Retired Person Name form",  # single-component patient names copied from the sources
    r"attribute <Laterality>",  # the source names no body part: laterality honestly unknown (empty)
    r"needed to build DICOMDIR",  # a source without PatientID/StudyID values
)


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) of dciodvfy for one file."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools)")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


def ct_files(folder: Path) -> dict[str, pydicom.Dataset]:
    """The CT instances of a folder by SOP Instance UID (a SEG or a licence beside them left out)."""
    found = {}
    for f in folder.iterdir():
        if f.suffix in ("", ".dcm"):
            ds = pydicom.dcmread(f)
            if ds.Modality == "CT":
                found[str(ds.SOPInstanceUID)] = ds
    return found


def text_values(ds: pydicom.Dataset) -> set[str]:
    """Every TEXT content item's value in an SR tree."""
    found = set()
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            found.add(str(item.TextValue))
        found |= text_values(item)
    return found


def bright_maps(vol, slices: list[int], threshold: float) -> np.ndarray:
    """(K, 1, H, W) maps that are 1 where the slice is brighter than ``threshold``: on the source grid they must
    match the referenced image's own pixels, whatever the flips between the grids."""
    return np.stack([(vol.hu[s] > threshold)[None].astype(np.float16) for s in slices])


def write_and_check(scan: Path, out: Path, *, heat_slices: list[int], threshold: float = 0.0) -> dict[str, Path]:
    """Write every object for ``scan`` and check values, references and geometry against the source files."""
    vol = read_ct(scan)
    z = vol.hu.shape[0]
    attention = np.linspace(0.1, 1.0, z)[::-1] ** 2  # most attention on slice 0, then 1, …
    heat = write_heatmap_file(out / "heatmaps" / f"{vol.scan_id}.h5", scan_id=vol.scan_id,
                              maps=bright_maps(vol, heat_slices, threshold), slice_index=heat_slices,
                              window=[0] * len(heat_slices), attention=attention[heat_slices], targets=["nodule"],
                              windows=[("lung", -1500.0, 500.0)])
    written = write_dicom_outputs(out / "dicom", vol, series=None, predictions=PREDICTIONS,
                                  slice_index=np.arange(z), attention=attention / attention.sum(), provenance=PROV,
                                  heatmaps=heat, top_k=2)
    assert set(written) == {"sr", "kos", "pm-nodule-lung"}
    instances = ct_files(scan)
    uids = set(instances)
    source = instances[sorted(uids)[0]]

    sr = hd.sr.srread(written["sr"])
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 2
    for group, p in zip(groups, PREDICTIONS):
        assert group.finding_type.meaning == p.name
        values = {m.name.meaning: m.value for m in group.get_measurements()}
        assert values == {"Probability": pytest.approx(p.score), "Decision threshold": pytest.approx(p.threshold)}
        (call,) = group.get_qualitative_evaluations()
        assert call.value.meaning == ("Present" if p.call else "Absent")
    texts = text_values(pydicom.dcmread(written["sr"]))
    assert {"encoder weights sha256=" + "ab" * 32, "clearct attention-MIL ensemble", "fold models=5",
            "decision threshold=0.4375"} <= texts
    evidence = pydicom.dcmread(written["sr"]).CurrentRequestedProcedureEvidenceSequence
    assert [e.StudyInstanceUID for e in evidence] == [source.StudyInstanceUID]
    assert [s.SeriesInstanceUID for s in evidence[0].ReferencedSeriesSequence] == [source.SeriesInstanceUID]
    assert {i.ReferencedSOPInstanceUID for i in evidence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence} == uids

    kos = pydicom.dcmread(written["kos"])
    chosen = [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in kos.ContentSequence
              if item.ValueType == "IMAGE"]
    assert len(chosen) == 2 and set(chosen) <= uids
    # slice_index → instance, exactly: the instances chosen lie at the z of the most attended slices
    want = top_slices(np.arange(z), attention, z, 2)
    assert want == [0, 1]
    got_z = [float(instances[u].ImagePositionPatient[2]) for u in chosen]
    np.testing.assert_allclose(got_z, vol.z_mm[want], atol=1e-2)  # axial: z_mm is the slice's IPP z

    pm = pydicom.dcmread(written["pm-nodule-lung"])
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    assert pm.StudyInstanceUID == source.StudyInstanceUID and pm.FrameOfReferenceUID == source.FrameOfReferenceUID
    frames = pm.pixel_array.reshape(-1, pm.Rows, pm.Columns)
    assert frames.dtype == np.float32 and len(frames) == len(heat_slices)
    for frame, item in zip(frames, pm.PerFrameFunctionalGroupsSequence):
        ref = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        image = instances[ref]
        assert ref in uids
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in image.ImagePositionPatient], atol=1e-3)
        hu = image.pixel_array * float(image.RescaleSlope) + float(image.RescaleIntercept)
        np.testing.assert_array_equal(frame, (hu > threshold).astype(np.float32))
    for path in written.values():
        errors, warnings = dciodvfy(path)
        assert errors == [], (path.name, errors)
        unknown = [w for w in warnings if not any(re.search(k, w) for k in KNOWN_WARNINGS)]
        assert unknown == [], (path.name, unknown)
    return written


def test_synthetic_dicom_cohort(tmp_path: Path) -> None:
    assert main(["synth", str(tmp_path / "cohort"), "--format", "dicom", "--patients", "1", "--size", "48",
                 "--slices", "8", "--workers", "1", "--scan-range", "chest"]) == 0
    scan = tmp_path / "cohort" / "scans" / "s0p0001_ct"
    write_and_check(scan, tmp_path / "out", heat_slices=[1, 4, 6], threshold=-500.0)


def test_series_stored_flipped_and_out_of_order(tmp_path: Path) -> None:
    """Rows and columns flipped (IOP −1,0,0,0,−1,0), z decreasing with the file number, names shuffled: the maps
    and references must still land on the right instances and pixels."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "flipped"
    folder.mkdir()
    for k, name in enumerate(rng.permutation(5)):
        stored = np.full((24, 32), 24, np.int16)  # −1000 HU
        stored[2 + k:9 + k, 3:8 + 2 * k] = 1100  # an asymmetric bright block that moves with the slice
        write_slice(folder / f"x{name}.dcm", stored, position=(100.0, 80.0, 50.0 - 2.0 * k),
                    orientation=(-1, 0, 0, 0, -1, 0), instance=k + 1, series_uid="1.2.826.0.1.77")
    rewrite(folder, FrameOfReferenceUID="1.2.826.0.1.78")
    vol = read_ct(folder)
    assert vol.meta["source_orientation"] == "SAR"  # rows → anterior, columns → right and vol.hu[0, 0, 0] == -1000
    write_and_check(folder, tmp_path / "out", heat_slices=[0, 3])


def test_real_series(realct: Path, tmp_path: Path) -> None:
    """dcmqi's three real GE slices (uncompressed, PixelPaddingValue): every object valid and referenced."""
    write_and_check(realct / "dcmqi_ct3slice", tmp_path / "out", heat_slices=[0, 2], threshold=100.0)


def test_anonymised_series_without_uids_is_refused(realct: Path, tmp_path: Path) -> None:
    """TotalSegmentator's example series has its Study/Series/SOP Instance UIDs blanked: nothing to reference."""
    scan = realct / "totalsegmentator" / "example_ct_dicom"
    vol = read_ct(scan)
    with pytest.raises(ClearctError, match="SOPInstanceUID, SeriesInstanceUID, StudyInstanceUID"):
        write_dicom_outputs(tmp_path / "dicom", vol, series=None, predictions=PREDICTIONS,
                            slice_index=np.arange(vol.hu.shape[0]), attention=np.ones(vol.hu.shape[0]),
                            provenance=PROV)
    assert not (tmp_path / "dicom").exists()


def test_top_slices_sums_windows() -> None:
    slice_index = np.array([0, 1, 2, 0, 1, 2])
    attention = np.array([0.1, 0.3, 0.2, 0.25, 0.0, 0.15])  # slice 0: 0.35, 1: 0.3, 2: 0.35
    assert top_slices(slice_index, attention, 3, 2) == [0, 2]
    assert top_slices(np.array([-1]), np.array([1.0]), 3, 2) == []
