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
