import pytest

from clearct.common.errors import ClearctError
from clearct.io import read_labels_table, read_lesions_table, read_scans_table


def test_scans_table_resolves_relative_paths(tmp_path):
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "scans.csv").write_text("scan_id,patient_id,path\nA,P1,scans/a.nii.gz\n")
    (rec,) = read_scans_table(tmp_path / "scans.csv")
    assert rec.path == (tmp_path / "scans" / "a.nii.gz").resolve() and rec.patient_id == "P1"


@pytest.mark.parametrize(
    "body, message",
    [
        ("scan_id,patient_id,path\nA,P1,a\nA,P2,a\n", "duplicate scan_id A on line"),
        ("scan_id,patient_id,path\nA,P1,missing.nii\n", "do not exist, line(s) 2"),
        ("scan_id,path\nA,a\n", "missing column(s) patient_id"),
        ("scan_id,patient_id,path\nA,,a\n", "empty scan_id, patient_id or path on line(s) 2"),
    ],
)
def test_scans_table_errors_name_file_and_rows(tmp_path, body, message):
    (tmp_path / "a").write_bytes(b"x")
    table = tmp_path / "scans.csv"
    table.write_text(body)
    with pytest.raises(ClearctError) as info:
        read_scans_table(table, check_exists=True)
    assert str(table) in str(info.value) and message in str(info.value)


def test_missing_scan_paths_are_left_to_the_batch(tmp_path):
    table = tmp_path / "scans.csv"
    table.write_text("scan_id,patient_id,path\nA,P1,missing.nii\n")
    (rec,) = read_scans_table(table)  # the command reports the missing file for this scan and goes on
    assert rec.path == (tmp_path / "missing.nii").resolve() and not rec.path.exists()


def test_lesions_and_labels(tmp_path):
    (tmp_path / "lesions.csv").write_text("scan_id,slice_index,x1,y1,x2,y2,label\nA,3,10,12,20,30,liver\n")
    (box,) = read_lesions_table(tmp_path / "lesions.csv")
    assert (box.slice_index, box.x2, box.label) == (3, 20.0, "liver")
    (tmp_path / "bad.csv").write_text("scan_id,slice_index,x1,y1,x2,y2,label\nA,3,10,12,5,30,liver\n")
    with pytest.raises(ClearctError, match="line"):
        read_lesions_table(tmp_path / "bad.csv")
    (tmp_path / "labels.csv").write_text("patient_id,liver,lung\nP1,1,0\nP2,0,1\n")
    labels = read_labels_table(tmp_path / "labels.csv")
    assert labels.id_column == "patient_id" and labels.ids == ["P1", "P2"] and labels.column("lung") == ["0", "1"]
