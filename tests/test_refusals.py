"""A refused command writes nothing: for every command of COMMANDS, an input refused at run time (a broken table,
a missing model folder, an unknown setting) gives one error line, exit code 2, and no output folder or file."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearct.cli import main
from clearct.config import COMMANDS
from cohort_files import nifti, scans_table


def _inputs(tmp: Path) -> dict[str, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    nifti(tmp / "n0.nii.gz")
    good = scans_table(tmp / "scans.csv", [("n0", "p0", "n0.nii.gz")])
    (tmp / "broken.csv").write_text("scan_id,path\nn0,n0.nii.gz\n")  # no patient_id column
    (tmp / "labels.csv").write_text("patient_id,finding\np0,1\n")
    (tmp / "feats").mkdir()
    return {"scans": good, "broken": tmp / "broken.csv", "labels": tmp / "labels.csv", "feats": tmp / "feats",
            "scan": tmp / "n0.nii.gz", "nothing": tmp / "no-such-model"}


# command → the arguments of a refused run (OUT is where it would write); every command must have one
REFUSED = {
    "info": lambda i, out: [str(i["broken"])],  # not a scan
    "scans": lambda i, out: [str(i["nothing"]), "--out", str(out / "scans.csv")],
    "encoders": lambda i, out: ["--out", str(out)],  # takes no settings at all
    "synth": lambda i, out: [str(out), "--patients", "0"],
    "pretrain": lambda i, out: ["--scans", str(i["broken"]), "--method", "moco", "--out", str(out)],
    "extract": lambda i, out: ["--scans", str(i["broken"]), "--encoder", "resnet_tiny", "--out", str(out)],
    "crossval": lambda i, out: ["--features", str(i["feats"]), "--labels", str(i["labels"]), "--targets", "lung",
                                "--out", str(out)],
    "finetune3d": lambda i, out: ["--scans", str(i["scans"]), "--labels", str(i["labels"]), "--targets", "lung",
                                  "--out", str(out)],
    "deploy": lambda i, out: ["--model", str(i["nothing"]), "--features", str(i["feats"]), "--labels",
                              str(i["labels"]), "--out", str(out)],
    "predict": lambda i, out: [str(i["scan"]), "--model", str(i["nothing"]), "--out", str(out)],
    "attention": lambda i, out: ["--model", str(i["nothing"]), "--features", str(i["feats"]), "--out", str(out)],
    "demo": lambda i, out: ["--out", str(out), "--size", "huge"],
    "import": lambda i, out: ["deeplesion", str(i["nothing"]), "--out", str(out)],
    "benchmark": lambda i, out: ["--out", str(out), "--tasks", "location,staging"],
    "init": lambda i, out: [str(i["labels"])],  # exists: refused without --overwrite
}


def test_every_command_has_a_refusal_case():
    assert set(REFUSED) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(REFUSED))
def test_a_refused_command_writes_nothing(command, tmp_path, capsys):
    inputs = _inputs(tmp_path / "in")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "in").rglob("*")}
    out = tmp_path / "out"
    assert main([command, *REFUSED[command](inputs, out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"clearct {command}: error: " in err and "Traceback" not in err, err
    assert not out.exists(), sorted(out.rglob("*"))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "in").rglob("*")} == before  # inputs untouched


def test_feature_files_of_other_settings_are_refused_before_the_run_folder_changes(tmp_path, capsys):
    inputs = _inputs(tmp_path / "in")
    out = tmp_path / "feats-out"
    args = ["extract", "--scans", str(inputs["scans"]), "--encoder", "random:resnet_tiny", "--device", "cpu",
            "--out", str(out)]
    assert main([*args, "--windows", "lung"]) == 0
    config = (out / "config.yaml").read_text()
    assert main([*args, "--windows", "abdomen"]) == 2  # other settings than the files there: refused
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == config  # still the settings of the files in the folder


def test_a_refusal_inside_a_run_is_in_its_log(tmp_path, capsys):
    """What can only be refused once the run has started (here: fewer slices than one batch) is in its log."""
    inputs = _inputs(tmp_path / "in")
    out = tmp_path / "run"
    assert main(["pretrain", "--scans", str(inputs["scans"]), "--method", "moco", "--arch", "resnet_tiny",
                 "--batch-size", "64", "--epochs", "1", "--workers", "0", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "fewer than one batch" in err and err in (out / "pretrain.log").read_text()
