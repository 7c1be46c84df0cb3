import subprocess
import sys
import textwrap

import pytest

from clearct.cli import build_parser, load_config, main
from clearct.config import COMMANDS


def test_help_does_not_import_torch():
    code = textwrap.dedent(
        """
        import sys
        from clearct.cli import main
        for cmd in [[], *[[name, "--help"] for name in sys.argv[1:]]]:
            try:
                main(cmd or ["--help"])
            except SystemExit:
                pass
        assert "torch" not in sys.modules, "--help imported torch"
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, *COMMANDS], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert f"usage: clearct {name}" in proc.stdout


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "clearct", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("clearct ")


def test_yaml_config_and_flags_merge(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("synth:\n  patients: 7\n  seed: 3\nextract:\n  batch_size: 5\n")
    ns = vars(build_parser().parse_args(["synth", str(tmp_path / "o"), "--seed", "9"]))
    ns.pop("command")
    ns.pop("config", None)
    cfg = load_config("synth", ns, cfg_file)
    assert (cfg.patients, cfg.seed, cfg.out) == (7, 9, tmp_path / "o")  # file gives patients, the flag wins on seed


def test_comma_lists_and_unknown_yaml_keys(tmp_path):
    cfg = load_config("extract", {"scans": "s.csv", "encoder": "x", "out": "o", "windows": "lung, abdomen"})
    assert cfg.windows == ["lung", "abdomen"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("scans: s.csv\nencoder: x\nout: o\nbatchsize: 3\n")
    with pytest.raises(Exception, match="batchsize"):
        load_config("extract", {}, bad)


def test_missing_required_flags_give_one_line(capsys):
    assert main(["crossval", "--features", "f"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--labels" in err and "--targets" in err
