"""Study exports with several series per folder, through `clearct scans`, the default rule, series selectors
(UID, number:N, index:K for a UID-less series) and every command that reads scans: info, extract, pretrain's slice
cache, crossval with an inferred task, predict (the encoder taken from the models) and attention."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from clearct.cli import main
from clearct.common.errors import ClearctError
from clearct.encoders import create_encoder
from clearct.io import read_ct, read_scans_table
from clearct.io.features import read_features
from clearct.io.series import RULE, SeriesInfo, choose
from ct_dicom import write_series

SIZE = 32


def _stored(n: int, seed: int, bright: bool = False) -> np.ndarray:
    """Stored values of a small series: air around a body of soft tissue (HU = stored − 1024)."""
    rng = np.random.default_rng(seed)
    body = np.zeros((n, SIZE, SIZE), np.int16)
    body[:, 6:26, 6:26] = 1040
    if bright:
        body[:, 12:20, 12:20] = 1400
    return (body + rng.integers(0, 40, body.shape)).astype(np.int16)


def _study(folder: Path, patient: str, k: int, *, bright: bool) -> None:
    """One study export: a thick and a thin axial series and a scout, all in one folder."""
    study = {"PatientID": patient, "StudyInstanceUID": f"1.9.{k}"}
    write_series(folder, _stored(6, k, bright), dz=5.0, thickness=5.0, name="thick", description="thick",
                 series_uid=f"1.9.{k}.1", attrs={**study, "SeriesNumber": 2})
    write_series(folder, _stored(14, k + 100, bright), dz=2.0, thickness=2.0, z0=-102.0, name="thin",
                 description="thin", series_uid=f"1.9.{k}.2", attrs={**study, "SeriesNumber": 3})
    write_series(folder, _stored(1, k), name="scout", description="scout", series_uid=f"1.9.{k}.3",
                 attrs={**study, "SeriesNumber": 1, "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})


def _uidless(folder: Path) -> None:
    """A stripped export: two series without SeriesInstanceUID, told apart only by SeriesNumber, and one with
    neither, in one study folder, beside an MR series and a README."""
    study = {"PatientID": "PX", "StudyInstanceUID": "1.8.1", "SeriesInstanceUID": None}
    write_series(folder, _stored(4, 1), name="a", description="short", attrs={**study, "SeriesNumber": 1})
    write_series(folder, _stored(9, 2), name="b", description="long", attrs={**study, "SeriesNumber": 4})
    write_series(folder / "mr", _stored(3, 3), modality="MR", series_uid="1.8.1.9", attrs={"PatientID": "PX"})
    (folder / "README.txt").write_text("exported by a PACS")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    for k in range(8):
        _study(root / f"P{k}" / "CT_study", f"P{k}", k, bright=k % 2 == 1)
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_default_rule_on_series_infos():
    def info(key, *, images=10, thick=2.0, coverage=100.0, axial=True, localizer=False, derived=False,
             number=None, study="1"):
        return SeriesInfo(key, key, number, "", images, thick, coverage, axial, localizer, derived, study, "p")

    thick, thin = info("1", thick=5.0, coverage=100.0), info("2", thick=1.0, coverage=96.0, images=96)
    partial = info("3", thick=0.6, coverage=40.0, images=66)
    scout, coronal = info("4", images=1, localizer=True, coverage=500), info("5", axial=False, coverage=400)
    mip = info("6", derived=True, coverage=300)
    chosen, how = choose([thick, thin, partial, scout, coronal, mip], None, "x")
    assert chosen is thin and how == RULE  # widest axial original; thinnest of the (nearly) equal coverages
    assert choose([thick, partial], None, "x")[0] is thick  # coverage before thickness
    assert choose([coronal, mip], None, "x")[0] is mip  # no axial original: axial derived before coronal
    numbered = [info("", number=3), info("number:5", number=5)]
    assert choose(numbered, "index:2", "x")[0].number == 5 and choose(numbered, "number:3", "x")[0].number == 3
    with pytest.raises(ClearctError, match="2 CT series of 2 studies"):
        choose([thick, info("9", study="2")], None, "x")
    with pytest.raises(ClearctError, match="series number:9 not found"):
        choose(numbered, "number:9", "x")
    with pytest.raises(ClearctError, match=r"series index:3 not found: 2 CT series"):
        choose(numbered, "index:3", "x")


def test_scans_writes_one_row_per_study_with_the_chosen_series(tree, tmp_path, capsys):
    _uidless(tree / "PX" / "CT")
    try:
        out = tmp_path / "tables" / "scans.csv"
        assert main(["scans", str(tree), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        rows = {r["patient_id"]: r for r in _rows(out)}
        assert len(rows) == 9 and rows["P3"]["series_uid"] == "1.9.3.2"  # the thin series of each study
        assert rows["PX"]["series_uid"] == "number:4"  # no UID: picked again by its SeriesNumber
        assert not Path(rows["P3"]["path"]).is_absolute()
        assert (out.parent / rows["P3"]["path"]).resolve() == (tree / "P3" / "CT_study").resolve()
        listed = _rows(out.with_name("scans-series.csv"))
        assert len(listed) == 8 * 2 + 2 and sum(int(r["chosen"]) for r in listed) == 9  # scouts never listed
        for line in ("skipped 8 localizer (scout) series", "skipped 3 MR (not a CT image)", "skipped 1 not DICOM",
                     "18 CT series in 9 studies of 9 patients → 9 rows"):
            assert line in printed, printed
        for record in read_scans_table(out):  # every row reads exactly the series it names
            vol = read_ct(record.path, series=record.series)
            assert vol.shape[0] == (9 if record.patient_id == "PX" else 14)
        assert main(["scans", str(tree), "--out", str(out)]) == 2  # never overwritten silently
        assert "--overwrite" in capsys.readouterr().err
        assert main(["scans", str(tree), "--out", str(out), "--series-per-study", "all", "--overwrite"]) == 0
        every = _rows(out)
        assert len(every) == 18 and len({r["scan_id"] for r in every}) == 18
        px = sorted(r["series_uid"] for r in every if r["patient_id"] == "PX")
        assert px == ["number:1", "number:4"]
        assert [read_ct(r.path, series=r.series).shape[0] for r in read_scans_table(out)
                if r.patient_id == "PX"] == [4, 9]
    finally:
        import shutil

        shutil.rmtree(tree / "PX")


def test_image_type_of_one_value_and_a_derived_reformat(tmp_path):
    study = {"PatientID": "PD", "StudyInstanceUID": "1.5"}
    write_series(tmp_path, _stored(8, 1), name="a", series_uid="1.5.1", attrs={**study, "ImageType": "ORIGINAL"})
    write_series(tmp_path, _stored(20, 2), name="b", dz=1.0, thickness=1.0, series_uid="1.5.2",
                 attrs={**study, "ImageType": ["DERIVED", "SECONDARY", "REFORMATTED"]})
    vol = read_ct(tmp_path)  # the reformat is thinner and longer, but repeats an acquisition: the original wins
    assert vol.meta["series_uid"] == "1.5.1" and any("REFORMATTED" not in w and "derived)" in w for w in vol.warnings)


def test_a_series_with_neither_uid_nor_number_is_picked_by_index(tmp_path, capsys):
    strip = {"PatientID": "PY", "StudyInstanceUID": "1.7", "SeriesInstanceUID": None, "SeriesNumber": None}
    write_series(tmp_path / "s", _stored(5, 4), name="a", attrs=strip)
    write_series(tmp_path / "s" / "sub", _stored(3, 5), name="b", series_uid="1.7.2",
                 attrs={"PatientID": "PY", "StudyInstanceUID": "1.7", "SeriesNumber": 2})
    assert main(["info", str(tmp_path / "s"), "--series", "index:2"]) == 0
    out = capsys.readouterr().out
    assert "[5, 32, 32]" in out and "selected by index:2" in out and "[2] (no SeriesInstanceUID) (5 slices" in out
    assert read_ct(tmp_path / "s", series="1.7.2").shape[0] == 3
    assert main(["info", str(tmp_path / "s"), "--series", "index:3"]) == 2
    assert "series index:3 not found: 2 CT series here" in capsys.readouterr().err


@pytest.mark.slow
def test_a_study_export_through_extract_pretrain_crossval_predict_attention(tree, tmp_path, capsys):
    scans = tmp_path / "scans.csv"
    assert main(["scans", str(tree), "--out", str(scans)]) == 0
    rows = _rows(scans)
    with open(tmp_path / "labels.csv", "w", newline="") as fh:  # per patient: the bright block is the finding
        csv.writer(fh).writerows([["patient_id", "finding"], *[[r["patient_id"], int(r["patient_id"][1:]) % 2]
                                                                for r in rows]])
    # a hand-written row without series_uid: the default rule reads the same thin series
    with open(scans, "a", newline="") as fh:
        csv.writer(fh).writerow(["P0_again", "P0", str(tree / "P0" / "CT_study"), ""])
    weights = tmp_path / "w.safetensors"  # weights of its own: predict must find them through the extract run
    save_file(create_encoder("vit_conv_test", seed=3).state_dict(), str(weights))
    feats = tmp_path / "feats"
    assert main(["extract", "--scans", str(scans), "--encoder", "vit_conv_test", "--weights", str(weights),
                 "--windows", "lung", "--device", "cpu", "--batch-size", "16", "--out", str(feats)]) == 0
    f = read_features(feats / f"{rows[0]['scan_id']}.h5", load_feats=False)
    assert f.attrs["n_slices"] == 14 and f.attrs["series"] == "1.9.0.2"
    assert f.attrs["series_rule"] == "selected by SeriesInstanceUID"
    again = read_features(feats / "P0_again.h5", load_feats=False)
    assert again.attrs["series"] == "1.9.0.2" and str(again.attrs["series_rule"]).startswith("default rule")
    (feats / "P0_again.h5").unlink()
    capsys.readouterr()

    # pretrain's slice cache holds each row's own series: thin (14) and, by number:2, the thick one (6)
    with open(tmp_path / "two.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["scan_id", "patient_id", "path", "series_uid"],
                                  ["thin", "P1", str(tree / "P1" / "CT_study"), "1.9.1.2"],
                                  ["thick", "P1", str(tree / "P1" / "CT_study"), "number:2"]])
    run = tmp_path / "enc"
    assert main(["pretrain", "--scans", str(tmp_path / "two.csv"), "--arch", "vit_conv_test", "--method", "moco",
                 "--epochs", "1", "--batch-size", "4", "--image-size", "32", "--workers", "0", "--proj-dim", "8",
                 "--mlp-dim", "16", "--device", "cpu", "--out", str(run)]) == 0
    cached = {json.loads(p.read_text())["scan_id"]: json.loads(p.read_text())["shape"][0]
              for p in (run / "slice-cache").glob("*.json")}
    assert cached == {"thin": 14, "thick": 6}

    cv = tmp_path / "cv"
    assert main(["crossval", "--features", str(feats), "--labels", str(tmp_path / "labels.csv"), "--targets",
                 "finding", "--folds", "2", "--epochs", "2", "--min-steps", "10", "--bootstrap", "10",
                 "--device", "cpu", "--no-error-viewers", "--out", str(cv)]) == 0
    printed = capsys.readouterr().out
    assert "task binary, inferred: column finding has two values 0, 1" in printed
    assert "labels per patient: 8 rows matched by patient_id" in printed
    assert "task: binary" in (cv / "config.yaml").read_text()

    pred = tmp_path / "pred"  # no --encoder: the models' features record their extract run
    assert main(["predict", str(scans), "--model", str(cv), "--device", "cpu", "--no-heatmaps", "--no-viewer",
                 "--out", str(pred)]) == 0
    result = json.loads((pred / rows[1]["scan_id"] / "prediction.json").read_text())
    assert result["slices"] == 14 and result["series_uid"] == "1.9.1.2"
    assert result["encoder"]["name"] == "vit_conv_test" and result["encoder"]["weights_sha256"] == f.weights_sha256
    assert len(_rows(pred / "predictions.csv")) == 9  # the hand-written row too
    sr = list((pred / rows[1]["scan_id"] / "dicom").glob("*"))
    assert sr, "the DICOM results reference the series that was read"

    # one folder of the export, its UID-less pick by --series; then without a record of the encoder: one line
    (feats / "config.yaml").rename(feats / "extract.yaml")
    assert main(["predict", str(tree / "P2" / "CT_study"), "--model", str(cv), "--device", "cpu",
                 "--out", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass --encoder" in err and not (tmp_path / "nowhere").exists()
    one = tmp_path / "one"
    assert main(["predict", str(tree / "P2" / "CT_study"), "--series", "number:2", "--model", str(cv),
                 "--encoder", "vit_conv_test", "--weights", str(weights), "--device", "cpu", "--no-heatmaps",
                 "--no-viewer", "--out", str(one)]) == 0
    assert json.loads((one / "prediction.json").read_text())["slices"] == 6  # the thick series, by its number
    (feats / "extract.yaml").rename(feats / "config.yaml")

    att = tmp_path / "att"
    assert main(["attention", "--model", str(cv), "--features", str(feats), "--scans", str(scans), "--figures", "1",
                 "--device", "cpu", "--out", str(att)]) == 0
    assert (att / "viewers" / f"{rows[0]['scan_id']}.html").is_file()


def test_finetune3d_volume_cache_reads_each_rows_series(tmp_path):
    from clearct.finetune3d.train import VolumeItem
    from clearct.finetune3d.volumes import VolumeCache, VolumePrep

    folder = tmp_path / "study"
    study = {"PatientID": "PZ", "StudyInstanceUID": "1.6"}
    write_series(folder, _stored(6, 1), name="a", series_uid="1.6.1", attrs={**study, "SeriesNumber": 1})
    write_series(folder, _stored(6, 2, bright=True), name="b", series_uid="1.6.2",
                 attrs={**study, "SeriesNumber": 2})
    prep = VolumePrep((4, 16, 16), None, (("abdomen", -175.0, 275.0),))
    items = [VolumeItem("a", "PZ", folder, np.zeros(1, np.float32), series="1.6.1"),
             VolumeItem("b", "PZ", folder, np.zeros(1, np.float32), series="number:2")]
    cache = VolumeCache(tmp_path / "cache", prep)
    (a, grid_a), (b, grid_b) = cache.load(items, workers=0)
    assert cache.file("a", folder, "1.6.1") != cache.file("a", folder, "number:2")
    assert grid_b.max() > grid_a.max() + 200  # the bright block is in series 2 only
