import yaml

from clearct.cli import load_config, main
from clearct.config import COMMANDS


def test_init_writes_a_section_per_command_that_validates(tmp_path, capsys):
    path = tmp_path / "clearct.yaml"
    assert main(["init", str(path)]) == 0
    text = path.read_text()
    sections = yaml.safe_load(text)
    assert set(sections) == set(COMMANDS) - {"init"}
    for name, (model, _, _) in COMMANDS.items():
        if name == "init":
            continue
        required = {f: info for f, info in model.model_fields.items() if info.is_required()}
        for field in required:
            assert f"# {field}: <required>" in text
        # every written default round-trips through the model once the required fields are filled in
        fillers = {f: "x" if "targets" not in f else ["a"] for f in required}
        cfg = load_config(name, fillers, path)
        for field in sections[name] or {}:
            assert getattr(cfg, field) == model.model_fields[field].get_default(call_default_factory=True)
    assert main(["init", str(path)]) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err


def _required(model) -> dict:
    return {f: "x" if "targets" not in f else ["a"] for f, info in model.model_fields.items() if info.is_required()}


def test_a_file_written_by_init_behaves_exactly_as_no_file(tmp_path):
    """For every command: `clearct init`, then the command with --config and only its required flags, resolves to
    the same settings as the command without the file — also where presets fill the empty fields (the DrasCLR
    CPU preset, the demo's --size, the benchmark's preset)."""
    from clearct.pretrain.drasclr.train import resolve_preset
    from clearct.workflows.benchmark import plan_steps, resolve_plan
    from clearct.workflows.demo import demo_steps, resolve_size

    path = tmp_path / "clearct.yaml"
    assert main(["init", str(path)]) == 0
    for name, (model, _, _) in COMMANDS.items():
        if name == "init":
            continue
        flags = _required(model)
        with_file, without = load_config(name, flags, path), load_config(name, flags, None)
        assert with_file == without, name
    drasclr = {"scans": "s.csv", "out": str(tmp_path / "run"), "method": "drasclr", "device": "cpu"}
    assert resolve_preset(load_config("pretrain", drasclr, path)) == resolve_preset(load_config("pretrain", drasclr))
    resolved, _ = resolve_preset(load_config("pretrain", drasclr, path))
    assert resolved.batch_size == 32 and resolved.drasclr.patch_size == 16  # the CPU preset, not the paper's sizes
    for size in ("test", "small"):
        flags = {"size": size, "out": str(tmp_path / "demo")}
        a, b = load_config("demo", flags, path), load_config("demo", flags)
        assert resolve_size(a) == resolve_size(b)
        assert [(s.name, s.config) for s in demo_steps(a, resolve_size(a), tmp_path)] == [
            (s.name, s.config) for s in demo_steps(b, resolve_size(b), tmp_path)]
    a, b = load_config("benchmark", {"out": "o"}, path), load_config("benchmark", {"out": "o"})
    assert [(s.name, s.config) for s in plan_steps(resolve_plan(a), tmp_path)] == [
        (s.name, s.config) for s in plan_steps(resolve_plan(b), tmp_path)]


def test_nothing_decides_by_which_fields_were_set():
    """Presets fill None placeholders only: code that asked which fields a file or flag set would treat a file
    written by `clearct init` (every field set) differently from no file."""
    from pathlib import Path

    src = Path(__file__).parents[1] / "src" / "clearct"
    assert not [p for p in src.rglob("*.py") if "model_fields_set" in p.read_text()]
