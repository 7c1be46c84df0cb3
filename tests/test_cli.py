import subprocess
import sys
import textwrap

import pytest
import yaml

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


def _subparsers():
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices


def _flag_names(model, prefix=""):
    """(flag, field info, required) of every field of a command model, sections included."""
    from clearct.config import section_type

    for name, info in model.model_fields.items():
        inner = section_type(info.annotation)
        if inner is not None:
            yield from _flag_names(inner, f"{prefix}{name}-")
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flag = name if extra.get("positional") and not prefix else "--" + (prefix + name).replace("_", "-")
        yield flag, info


def test_required_fields_are_marked_in_usage_and_help_of_every_command():
    for name, sub in _subparsers().items():
        model = COMMANDS[name][0]
        usage = sub.format_usage()
        text = sub.format_help()
        required = [flag for flag, info in _flag_names(model) if info.is_required()]
        group = next((g for g in sub._action_groups if g.title.startswith("required")), None)
        in_group = {a.dest if not a.option_strings else a.option_strings[0] for a in group._group_actions} \
            if group else set()
        for flag in required:
            word = flag.upper() if not flag.startswith("--") else flag
            assert f" {word}" in usage and f"[{word}" not in usage, (name, flag, usage)
            assert flag in in_group, (name, flag)
        optional = {flag for flag, info in _flag_names(model) if not info.is_required()}
        assert not optional & in_group, (name, optional & in_group)
        assert usage.rstrip().endswith("[options]")
        if required:  # the required group comes first in --help
            assert text.index("required (as flags or in the --config file)") < text.index("options:")


def test_every_flag_states_one_default():
    for name, sub in _subparsers().items():
        for action in sub._actions:
            helptext = (action.help or "").lower().replace("default rule", "series rule")  # a name, not a default
            assert helptext.count("default") <= 1, (name, action.option_strings, action.help)
            assert "(default: None)" not in (action.help or ""), (name, action.option_strings)
    demo = _subparsers()["demo"]
    lr = next(a for a in demo._actions if "--crossval-lr" in a.option_strings)
    assert "(default: the workflow's preset, else 0.0001)" in lr.help
    heat = next(a for a in _subparsers()["predict"]._actions if "--heatmaps" in a.option_strings)
    assert heat.help.endswith("(default: --heatmaps)")


def _misspelt(word: str) -> str:
    """``word`` with two inner letters swapped (a typo that is no other flag)."""
    i = len(word) // 2
    return word[:i] + word[i + 1] + word[i] + word[i + 2:] if word[i] != word[i + 1] else word[:i] + word[i + 2:]


def test_unknown_flags_get_the_closest_flag_for_every_command(capsys):
    for name, sub in _subparsers().items():
        flags = sorted((o for a in sub._actions for o in a.option_strings if o.startswith("--")), key=len)
        flag = flags[-1]
        typo = _misspelt(flag)
        assert typo not in flags
        assert main([name, typo, "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"clearct {name}: error: unknown flag {typo} (did you mean {flag}?)", err
    assert main(["crossval", "--fold", "3"]) == 2  # a prefix is no abbreviation: it is a typo
    assert "unknown flag --fold (did you mean --folds?)" in capsys.readouterr().err
    assert main(["crosval", "--help"]) == 2
    assert "unknown command crosval (did you mean crossval?)" in capsys.readouterr().err
    assert main(["--verbose"]) == 2 and "unknown argument --verbose" in capsys.readouterr().err


def test_unknown_yaml_keys_get_the_closest_key_for_every_command(tmp_path):
    from clearct.common.errors import ClearctError

    for name, (model, _, _) in COMMANDS.items():
        top = sorted(model.model_fields, key=len)
        if not top:  # clearct encoders takes no settings
            continue
        key = top[-1]
        typo = _misspelt(key)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({name: {typo: 1}}))
        with pytest.raises(ClearctError) as info:
            load_config(name, {}, path)
        assert f"unknown key {typo} in section {name} (did you mean {key}?)" in str(info.value), str(info.value)


def test_nested_and_plain_yaml_keys(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("crossval:\n  fold: 3\n")
    assert main(["crossval", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"clearct crossval: error: {path}: unknown key fold in section crossval (did you mean folds?)"
    path.write_text("demo:\n  crossval:\n    lr: 0.01\n    fold: 3\n")
    assert main(["demo", "--config", str(path)]) == 2
    assert "unknown key crossval.fold in section demo (did you mean crossval.folds?)" in capsys.readouterr().err
    path.write_text("crosval:\n  folds: 3\n")  # a misspelt section: the whole file read as fields
    assert main(["crossval", "--config", str(path)]) == 2
    assert "unknown key crosval (did you mean crossval?)" in capsys.readouterr().err
    path.write_text("batch-size: 3\n")  # a plain file: fields at the top
    assert main(["extract", "--config", str(path)]) == 2
    assert "unknown key batch-size (did you mean batch_size?)" in capsys.readouterr().err


def test_encoders_lists_every_registry_entry(capsys):
    from clearct.encoders.baselines import RELEASED_WEIGHTS
    from clearct.encoders.registry import list_encoders

    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    for name in list_encoders():
        assert name in names, name
    assert "timm:<name>" in names and "random:<name>" in names and "RUN_FOLDER" in names
    for name, where in RELEASED_WEIGHTS.items():
        assert f"{name}" in out and where in out and "https://huggingface.co/" in where
