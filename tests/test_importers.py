"""clearct import on miniature copies of DeepLesion, RAD-ChestCT and NSCLC-Radiomics written by the tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from clearct.cli import main
from clearct.common.errors import ClearctError
from clearct.importers import import_dataset, import_deeplesion, import_radchestct, list_importers
from clearct.importers.nsclc import stage_group
from clearct.io import read_ct, read_labels_table, read_lesions_table, read_scans_table
from ct_dicom import _base, write_series

RTSTRUCT, SEG = "1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.66.4"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])


def _by(rows: list[dict[str, str]], key: str) -> dict[str, dict[str, str]]:
    return {r[key]: r for r in rows}


# ---------------------------------------------------------------- DeepLesion
# folder → (PNG numbers, spacing "x, y, z", lesions as (key slice, box, Coarse_lesion_type, planted HU))
DL_SERIES = {
    "000001_01_01": (range(101, 107), "0.7, 0.7, 2.5", [(103, (8, 10, 16, 20), 1, 300)]),
    "000001_02_01": ([10, 11, 12, 20, 21, 22], "0.8, 0.8, 5", [(20, (4, 4, 12, 9), -1, 500), (11, (20, 20, 30, 28), 4, 700)]),
    "000002_01_01": (range(1, 5), "0.6, 0.6, 1", [(3, (2, 3, 9, 14), 5, 900)]),
}
DL_COLUMNS = ["File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Measurement_coordinates",
              "Bounding_boxes", "Lesion_diameters_Pixel_", "Normalized_lesion_location", "Coarse_lesion_type",
              "Possibly_noisy", "Slice_range", "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender",
              "Patient_age", "Train_Val_Test"]


def _dl_row(folder: str, key: int, box: str, kind: int, spacing: str, split: int) -> list:
    p, s, r = folder.split("_")
    return [f"{folder}_{key:03d}.png", int(p), int(s), int(r), key, "", box, "", "", kind, 0, "", spacing,
            "32, 32", "-175, 275", "F", 60, split]


@pytest.fixture(scope="module")
def deeplesion(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("DeepLesion")
    rows = []
    for folder, (numbers, spacing, lesions) in DL_SERIES.items():
        (root / "Images_png" / folder).mkdir(parents=True)
        split = 1 if folder.startswith("000001") else 3
        for n in numbers:
            hu = np.full((32, 32), -800, np.int32)
            for key, (x1, y1, x2, y2), _, value in lesions:
                if key == n:
                    hu[y1:y2, x1:x2] = value  # rows = y, columns = x
            Image.fromarray((hu + 32768).astype(np.uint16)).save(root / "Images_png" / folder / f"{n:03d}.png")
        rows += [_dl_row(folder, key, ", ".join(map(str, box)), kind, spacing, split) for key, box, kind, _ in lesions]
    rows.append(_dl_row("000002_01_02", 7, "1, 1, 5, 5", 2, "1, 1, 1", 3))  # series folder not downloaded
    rows.append(_dl_row("000002_01_01", 50, "1, 1, 5, 5", 2, "0.6, 0.6, 1", 3))  # key slice not in the folder
    rows.append(_dl_row("000002_01_01", 2, "9, 5, 3, 8", 2, "0.6, 0.6, 1", 3))  # x2 < x1
    _write_csv(root / "DL_info.csv", DL_COLUMNS, rows)
    return root


def test_deeplesion_tables_key_slices_and_boxes(deeplesion, tmp_path, capsys):
    out = tmp_path / "dl"
    assert main(["import", "deeplesion", str(deeplesion), "--out", str(out), "--unlabelled", "flag"]) == 0
    printed = capsys.readouterr().out
    assert "3 scans of 2 patients" in printed and "1 lesions of series without a PNG folder" in printed
    assert "1 lesions whose key-slice PNG is not in the folder" in printed and "1 lesions with an invalid box" in printed

    scans = read_scans_table(out / "scans.csv")
    assert [(s.scan_id, s.patient_id) for s in scans] == [
        ("000001_01_01", "000001"), ("000001_02_01", "000001"), ("000002_01_01", "000002")]
    assert all(not Path(r["path"]).is_absolute() for r in _rows(out / "scans.csv"))  # relative to the CSV
    boxes = read_lesions_table(out / "lesions.csv")
    assert len(boxes) == 4
    planted = {(f, key): (value, kind) for f, (_, _, les) in DL_SERIES.items() for key, _, kind, value in les}
    index_of = {("000001_01_01", 103): 2, ("000001_02_01", 20): 3, ("000001_02_01", 11): 1, ("000002_01_01", 3): 2}
    for scan in scans:
        volume = read_ct(scan.path)
        numbers, spacing, _ = DL_SERIES[scan.scan_id]
        x, y, z = (float(v) for v in spacing.split(","))
        assert volume.spacing_mm == pytest.approx((z, y, x))  # spacing from Spacing_mm_px_ "x, y, z"
        for box in (b for b in boxes if b.scan_id == scan.scan_id):
            key = next(k for (f, k), i in index_of.items() if f == scan.scan_id and i == box.slice_index)
            value, kind = planted[(scan.scan_id, key)]
            inside = volume.hu[:, int(box.y1):int(box.y2), int(box.x1):int(box.x2)]
            assert np.all(inside[box.slice_index] == value)  # the box sits on the lesion of the key slice
            assert not np.any(np.delete(inside, box.slice_index, axis=0) == value)
            assert box.label == {1: "bone", 4: "liver", 5: "lung", -1: "unlabelled"}[kind]

    labels = read_labels_table(out / "labels.csv")
    assert labels.id_column == "scan_id"
    scan_rows = _by(_rows(out / "labels.csv"), "scan_id")
    assert scan_rows["000001_01_01"]["bone"] == "1" and scan_rows["000001_01_01"]["liver"] == "0"
    assert (scan_rows["000001_02_01"]["liver"], scan_rows["000001_02_01"]["has_unlabelled"]) == ("1", "1")
    assert scan_rows["000002_01_01"]["lung"] == "1" and scan_rows["000002_01_01"]["has_unlabelled"] == "0"
    assert [r["split"] for r in scan_rows.values()] == ["train", "train", "test"]
    patients = _by(_rows(out / "labels_patient.csv"), "patient_id")
    p1 = patients["000001"]
    assert (p1["bone"], p1["liver"], p1["lung"], p1["has_unlabelled"], p1["n_scans"], p1["n_lesions"]) == (
        "1", "1", "0", "1", "2", "3")
    assert patients["000002"]["split"] == "test" and patients["000002"]["lung"] == "1"
    summary = json.loads((out / "import-summary.json").read_text())
    assert summary["prevalence"]["labels_patient.csv"]["lung"] == 0.5


def test_deeplesion_drop_unlabelled_and_mapping_override(deeplesion, tmp_path):
    result = import_deeplesion(deeplesion)  # default: drop the label rows of scans with untyped lesions
    assert [r["scan_id"] for r in result.tables["labels.csv"].rows] == ["000002_01_01"]
    assert [r["patient_id"] for r in result.tables["labels_patient.csv"].rows] == ["000002"]
    assert len(result.tables["lesions.csv"].rows) == 4  # boxes stay for LECL pretraining
    mapping = tmp_path / "types.yaml"
    mapping.write_text("lesion_types: {1: bone, 4: kidney, 5: lung}\n")
    rows = _by(import_deeplesion(deeplesion, mapping=mapping, unlabelled="flag").tables["labels.csv"].rows, "scan_id")
    assert (rows["000001_02_01"]["kidney"], rows["000001_02_01"]["liver"]) == (1, 0)
    mapping.write_text("lesion_types: {4: spleen}\n")
    with pytest.raises(ClearctError, match="spleen"):
        import_deeplesion(deeplesion, mapping=mapping)
    mapping.write_text("locations: {1: bone}\n")
    with pytest.raises(ClearctError, match="unknown key"):
        import_deeplesion(deeplesion, mapping=mapping)


# ---------------------------------------------------------------- RAD-ChestCT
RC_COLUMNS = ["emphysema*left_upper", "emphysema*right_lower", "bronchiectasis*lung", "pleural_effusion*right_lung",
              "atelectasis*left_lower", "fibrosis*lung", "opacity*right_upper", "calcification*heart",
              "calcification*left_upper", "nodule*left_upper", "nodule*liver", "nodulegr1cm*right_lower",
              "cardiomegaly*heart"]


def make_radchestct(root: Path, n: int = 6, slices: int = 4, size: int = 24) -> dict[str, dict[str, int]]:
    """n volumes (trn/tst), label tables with a few location columns, a metadata table with patient ids; returns
    the expected 8-abnormality labels per volume."""
    rng = np.random.default_rng(0)
    (root / "volumes").mkdir(parents=True)
    expected, tables = {}, {"train": [], "test": []}
    for i in range(n):
        split = "train" if i < n - 2 else "test"
        acc = f"{'trn' if split == 'train' else 'tst'}{i:05d}"
        values = {c: int(rng.random() < 0.4) for c in RC_COLUMNS}
        values["nodule*left_upper"], values["nodule*liver"] = i % 2, int(i == 2)  # nodule: 1,0,1 … and liver on 2
        values["nodulegr1cm*right_lower"] = int(i == 4)
        tables[split].append([acc, *[values[c] for c in RC_COLUMNS]])
        np.savez_compressed(root / "volumes" / f"{acc}.npz",
                            ct=rng.integers(-1000, 400, size=(slices, size, size)).astype(np.int16))
        expected[acc] = {
            "emphysema": values["emphysema*left_upper"] | values["emphysema*right_lower"],
            "bronchiectasis": values["bronchiectasis*lung"], "effusion": values["pleural_effusion*right_lung"],
            "atelectasis": values["atelectasis*left_lower"], "fibrosis": values["fibrosis*lung"],
            "opacity": values["opacity*right_upper"],
            "calcification": values["calcification*heart"] | values["calcification*left_upper"],
            "nodule": values["nodule*left_upper"] | values["nodule*liver"]}
    tables["train"].append(["trn99999", *[1] * len(RC_COLUMNS)])  # a label row whose volume is not downloaded
    for split, rows in tables.items():
        _write_csv(root / f"img{split}_Abnormality_and_Location_Labels.csv", ["NoteAcc_DEID", *RC_COLUMNS], rows)
    ids = sorted(expected)
    _write_csv(root / "CT_Scan_Metadata_Complete_35747.csv", ["NoteAcc_DEID", "MRN_DEID", "Slices"],
               [[acc, f"RHMRN{k // 2}", 4] for k, acc in enumerate(ids)])  # two volumes per patient
    return expected


def test_radchestct_labels_or_over_locations(tmp_path, capsys):
    root = tmp_path / "RAD-ChestCT"
    expected = make_radchestct(root)
    out = tmp_path / "rc"
    assert main(["import", "radchestct", str(root), "--out", str(out), "--absolute-paths"]) == 0
    assert "1 label rows without a .npz volume under ROOT" in capsys.readouterr().out
    scans = read_scans_table(out / "scans.csv")
    assert sorted(s.scan_id for s in scans) == sorted(expected)
    assert all(Path(r["path"]).is_absolute() for r in _rows(out / "scans.csv"))
    assert {s.scan_id: s.patient_id for s in scans}["tst00005"] == "RHMRN2"
    assert read_ct(scans[0].path).hu.shape == (4, 24, 24)
    rows = _by(_rows(out / "labels.csv"), "scan_id")
    for acc, labels in expected.items():
        assert {k: int(rows[acc][k]) for k in labels} == labels, acc
    assert rows["tst00005"]["split"] == "test" and rows["trn00000"]["split"] == "train"
    patients = _by(_rows(out / "labels_patient.csv"), "patient_id")
    assert len(patients) == 3 and patients["RHMRN1"]["nodule"] == "1" and patients["RHMRN1"]["n_scans"] == "2"
    assert patients["RHMRN2"]["split"] == "test"

    mapping = tmp_path / "map.yaml"  # nodule from the lung locations only, plus nodules > 1 cm
    mapping.write_text("targets:\n  nodule: {abnormalities: [nodule, nodulegr1cm], locations: [left_upper, right_lower]}\n")
    result = import_radchestct(root, mapping=mapping)
    nodule = {r["scan_id"]: r["nodule"] for r in result.tables["labels.csv"].rows}
    assert nodule == {"trn00000": 0, "trn00001": 1, "trn00002": 0, "trn00003": 1, "tst00004": 1, "tst00005": 1}
    assert result.tables["labels.csv"].columns == ["scan_id", "nodule", "split"]
    mapping.write_text("targets: {nodule: [lung_nodule]}\n")
    with pytest.raises(ClearctError, match="no <abnormality>\\*<location> column for target nodule"):
        import_radchestct(root, mapping=mapping)


# ---------------------------------------------------------------- NSCLC-Radiomics
CLINICAL = ["PatientID", "age", "clinical.T.Stage", "Clinical.N.Stage", "Clinical.M.Stage", "Overall.Stage",
            "Histology", "gender", "Survival.time", "deadstatus.event"]


def _set_patient(files: list[Path], pid: str) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientID = pid
        ds.save_as(f)


def _non_image(path: Path, sop: str, modality: str, pid: str) -> None:
    ds = _base(sop, modality, generate_uid(), modality.lower())
    ds.PatientID = pid
    path.parent.mkdir(parents=True)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def nsclc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("manifest") / "NSCLC-Radiomics"
    rng = np.random.default_rng(1)
    for i, pid in enumerate(["LUNG1-001", "LUNG1-002", "LUNG1-003"]):
        study = root / pid / "09-18-2008-StudyID-NA-69331"
        files = write_series(study / "0.000000-NA-82046", rng.integers(0, 1400, size=(3 + i, 16, 16)),
                             series_uid=generate_uid())
        _set_patient(files, pid)
        if i == 0:  # the RTSTRUCT and SEG series beside the CT
            _non_image(study / "1.000000-NA-28595" / "1-1.dcm", RTSTRUCT, "RTSTRUCT", pid)
            _non_image(study / "300.000000-Segmentation-91221" / "1-1.dcm", SEG, "SEG", pid)
    _write_csv(root / "NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv", CLINICAL, [
        ["LUNG1-001", 78.75, 2, 3, 0, "IIIb", "large cell", "male", 2165, 1],
        ["LUNG1-002", 83.8, 2, 0, 0, "I", "squamous cell carcinoma", "male", 155, 1],
        ["LUNG1-003", 68.2, 2, 3, 0, "NA", "NA", "male", 256, 0],
        ["LUNG1-004", 70.9, 4, 1, 0, "II", "adenocarcinoma", "female", 141, 1]])  # no images downloaded
    return root.parent


def test_nsclc_ct_only_stage_and_survival(nsclc, tmp_path, capsys):
    out = tmp_path / "nsclc"
    assert main(["import", "nsclc", str(nsclc), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 RTSTRUCT series not listed" in printed and "1 SEG series not listed" in printed
    assert "1 clinical rows without a CT series" in printed and "1 patient(s) without a stage" in printed
    scans = read_scans_table(out / "scans.csv")
    assert [(s.scan_id, s.patient_id) for s in scans] == [(p, p) for p in ("LUNG1-001", "LUNG1-002", "LUNG1-003")]
    for k, scan in enumerate(scans):
        assert scan.path.name == "0.000000-NA-82046"
        vol = read_ct(scan.path, series=scan.series)  # the table names the CT series it listed
        assert vol.hu.shape == (3 + k, 16, 16) and scan.series and vol.meta["series_uid"] == scan.series
    rows = _by(_rows(out / "labels.csv"), "patient_id")
    assert [rows[p]["stage_high"] for p in ("LUNG1-001", "LUNG1-002", "LUNG1-003")] == ["1", "0", ""]
    assert [rows[p]["has_stage"] for p in ("LUNG1-001", "LUNG1-002", "LUNG1-003")] == ["1", "1", "0"]
    assert (rows["LUNG1-001"]["stage"], rows["LUNG1-001"]["stage_group"], rows["LUNG1-001"]["n_stage"]) == (
        "IIIb", "III", "3")
    assert (rows["LUNG1-003"]["survival_days"], rows["LUNG1-003"]["event"]) == ("256", "0")
    assert rows["LUNG1-003"]["histology"] == ""
    assert [stage_group(s) for s in ("IIIa", "Stage IV", "ii", "IB", "NA", "3")] == ["III", "IV", "II", "I", "", ""]


def test_refusals_name_the_folder(deeplesion, nsclc, tmp_path, capsys):
    for dataset, root in (("nsclc", deeplesion), ("deeplesion", nsclc), ("radchestct", nsclc)):
        assert main(["import", dataset, str(root), "--out", str(tmp_path / dataset)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(root) in err[0] and "does not look like" in err[0], err
        assert not (tmp_path / dataset / "scans.csv").exists()
    assert main(["import", "lidc", str(nsclc), "--out", str(tmp_path / "x")]) == 2
    assert "unknown dataset 'lidc'" in capsys.readouterr().err
    assert main(["import", "nsclc", str(tmp_path / "absent"), "--out", str(tmp_path / "x")]) == 2
    assert "not a folder" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns: {stage: Stage.Overall}\n")
    assert main(["import", "nsclc", str(nsclc), "--out", str(tmp_path / "y"), "--mapping", str(bad)]) == 2
    assert "Stage.Overall" in capsys.readouterr().err


@pytest.mark.slow
def test_imported_tables_drive_extract_and_crossval(tmp_path):
    root = tmp_path / "RAD-ChestCT"
    make_radchestct(root, n=12, slices=3, size=32)
    tables = tmp_path / "cohort"
    assert main(["import", "radchestct", str(root), "--out", str(tables)]) == 0
    feats = tmp_path / "feats"
    assert main(["extract", "--scans", str(tables / "scans.csv"), "--encoder", "vit_conv_test", "--windows", "lung",
                 "--out", str(feats), "--batch-size", "8", "--workers", "0", "--device", "cpu"]) == 0
    assert len(list(feats.glob("*.h5"))) == 12
    cv = tmp_path / "cv"
    assert main(["crossval", "--features", str(feats), "--labels", str(tables / "labels.csv"),
                 "--targets", "nodule", "--task", "binary", "--folds", "2", "--epochs", "2", "--min-steps", "4",
                 "--bootstrap", "20", "--device", "cpu", "--out", str(cv)]) == 0
    summary = json.loads((cv / "summary.json").read_text())
    assert summary["scans_used"] == 12 and summary["patients"] == 6
    assert summary["issues"] == {"random_init_features": 1}  # vit_conv_test without weights: announced
    assert {r["scan_id"] for r in _rows(cv / "predictions.csv")} == {p.stem for p in feats.glob("*.h5")}


@pytest.mark.parametrize("name", list_importers())
def test_every_registered_importer_refuses_an_empty_folder_in_one_line(tmp_path, name):
    with pytest.raises(ClearctError) as err:
        import_dataset(name, tmp_path)
    assert "\n" not in str(err.value)


def test_an_option_the_importer_does_not_use_is_an_error(tmp_path):
    assert {"deeplesion", "radchestct", "nsclc"} <= set(list_importers())
    with pytest.raises(ClearctError, match="the radchestct importer takes no --clinical"):
        import_dataset("radchestct", tmp_path, clinical=tmp_path / "c.csv")
    with pytest.raises(ClearctError, match="unknown dataset 'lidc'"):
        import_dataset("lidc", tmp_path)
