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


def test_labels_per_scan_and_per_patient_are_told_apart(tmp_path):
    per_scan = tmp_path / "scan.csv"
    per_scan.write_text("scan_id,patient_id,finding\ns1,p1,1\ns2,p1,0\ns3,p2,1\n")  # two scans of p1
    labels = read_labels_table(per_scan)
    assert labels.id_column == "scan_id" and labels.ids == ["s1", "s2", "s3"] and labels.patients == ["p1", "p1", "p2"]
    assert list(labels.columns) == ["finding"] and labels.keyed.startswith("labels per scan: 3 rows")
    per_patient = tmp_path / "patient.csv"
    per_patient.write_text("patient_id,finding\np1,1\np2,0\n")
    labels = read_labels_table(per_patient)
    assert labels.id_column == "patient_id" and labels.patients is None and labels.keyed.startswith("labels per patient")
    only_scans = tmp_path / "only.csv"
    only_scans.write_text("scan_id,finding\ns1,1\n")
    assert read_labels_table(only_scans).id_column == "scan_id"


@pytest.mark.parametrize(("body", "says"), [
    ("patient_id,finding\np1,1\np1,0\n", "duplicate patient_id p1 on line(s) 2, 3: without a scan_id column the "
                                          "labels are per patient, one row per patient; for labels per scan add a "
                                          "scan_id column"),
    ("scan_id,patient_id,finding\ns1,p1,1\ns1,p1,0\n", "duplicate scan_id s1 on line(s) 2, 3: a table with a "
                                                        "scan_id column holds labels per scan, one row per scan"),
    ("scan_id,finding\n,1\n", "empty scan_id on line(s) 2"),
])
def test_label_table_errors_say_which_column_to_use(tmp_path, body, says):
    path = tmp_path / "labels.csv"
    path.write_text(body)
    with pytest.raises(ClearctError) as info:
        read_labels_table(path)
    assert str(info.value) == f"{path}: {says}"


@pytest.mark.parametrize(("columns", "targets", "task", "why"), [
    ({"finding": ["0", "1", "1", ""]}, ["finding"], "binary", "column finding has two values 0, 1"),
    ({"sex": ["F", "M", "F"]}, ["sex"], "binary", "column sex has two values F, M"),
    ({"a": ["0", "1"], "b": ["1", "1", "0"]}, ["a", "b"], "multilabel", "2 columns of 0/1 values"),
    ({"kind": ["adeno", "squamous", "large", "adeno"]}, ["kind"], "multiclass", "column kind has 3 categories"),
    ({"size": ["12.5", "30.1", "8"]}, ["size"], "regression", "column size holds numbers"),
    ({"age": [str(a) for a in range(40, 80, 2)]}, ["age"], "regression", "column age holds numbers"),
    ({"a": ["1.5", "2"], "b": ["3", "4", "7.25"]}, ["a", "b"], "regression", "2 numeric columns"),
    ({"a": ["2", "3", "4"], "b": ["3", "4", "7.25"]}, ["a", "b"], "regression", "2 numeric columns"),
])
def test_the_task_is_inferred_from_the_label_values(columns, targets, task, why):
    from clearct.modeling.tasks import infer_task

    kind, reason = infer_task(targets, columns)
    assert kind == task and why in reason


@pytest.mark.parametrize(("columns", "targets", "says"), [
    ({"grade": ["1", "2", "3", "2"]}, ["grade"], "3 whole numbers (1, 2, 3): classes or a quantity? pass --task "
                                                 "multiclass or --task regression"),
    ({"time": ["100", "250.5", "30"], "event": ["1", "0", "1"]}, ["time", "event"], "(time,event? pass --task "
                                                                                     "survival); pass --task"),
    ({"x": ["1", "1"]}, ["x"], "column x holds 1 distinct value(s) (1): nothing to predict"),
    ({"a": ["0", "1"], "b": ["red", "green", "blue"]}, ["a", "b"], "cannot infer the task from a, b"),
])
def test_a_task_that_cannot_be_inferred_is_asked_for(columns, targets, says):
    from clearct.modeling.tasks import infer_task

    with pytest.raises(ValueError) as info:
        infer_task(targets, columns)
    assert says in str(info.value)


def test_read_task_prints_the_keying_and_the_inferred_task(tmp_path, capsys):
    from clearct.modeling.labels import read_task

    path = tmp_path / "labels.csv"
    path.write_text("scan_id,patient_id,finding\ns1,p1,1\ns2,p1,0\n")
    labels, spec = read_task(path, ["finding"], None, command="crossval")
    assert spec.kind == "binary" and spec.classes == ["0", "1"]
    printed = capsys.readouterr().out
    assert f"crossval: {path}: labels per scan: 2 rows matched by scan_id" in printed
    assert "crossval: task binary, inferred: column finding has two values 0, 1 (--task sets another)" in printed
    assert read_task(path, ["finding"], "multilabel")[1].kind == "multilabel"  # an explicit task is kept
    with pytest.raises(ClearctError, match="scan_id and patient_id name the rows, they are not targets"):
        read_task(path, ["patient_id"], None)


def test_a_per_scan_row_naming_another_patient_is_left_out():
    from clearct.common.failures import Issues
    from clearct.io.tables import LabelTable
    from clearct.modeling.labels import LabelJoin
    from clearct.modeling.tasks import make_task

    table = LabelTable("scan_id", ["s1", "s2"], {"finding": ["1", "0"]}, ["p1", "p9"])
    issues = Issues()
    join = LabelJoin(table, make_task("binary", ["finding"], table.columns), None, issues, noun="scan",
                     kind="scans")
    assert join.label("s1", "p1") is not None and join.label("s2", "p2") is None
    assert issues.counts == {"patient_mismatch": 1} and "names patient p9, the scan belongs to p2" in issues.lines[0]
