"""`clearct init`: a commented YAML file with a section per command, generated from the config models so it can
never drift from the flags. Every command reads its own section with ``--config FILE.yaml``."""

from __future__ import annotations

import json
from pathlib import Path

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError
from clearct.config import COMMANDS, CommandConfig, InitConfig, section_type


def _yaml_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def config_template(commands: list[str] | None = None) -> str:
    """Return the YAML text: required fields are commented out with a placeholder, defaults are written."""
    lines = [
        "# clearct configuration: one section per command; run e.g. `clearct crossval --config this.yaml`.",
        "# Flags on the command line override values here. Lines starting with '# ' are switched off.",
    ]
    for name in commands or [c for c in COMMANDS if c != "init"]:
        model, _target, help_text = COMMANDS[name]
        lines += ["", f"{name}:  # {help_text}", *_field_lines(model, "  ")]
    return "\n".join(lines) + "\n"


def _field_lines(model: type[CommandConfig], indent: str) -> list[str]:
    """The commented fields of ``model``; a nested section as a mapping of its own fields (``null`` = the
    workflow's preset, else the command's default)."""
    lines = []
    for field_name, info in model.model_fields.items():
        lines.append(f"{indent}# {info.description or field_name}")
        inner = section_type(info.annotation)
        if inner is not None:
            lines += [f"{indent}{field_name}:", *_field_lines(inner, indent + "  ")]
        elif info.is_required():
            lines.append(f"{indent}# {field_name}: <required>")
        else:
            lines.append(f"{indent}{field_name}: {_yaml_value(info.get_default(call_default_factory=True))}")
    return lines


def run_init(cfg: InitConfig) -> int:
    if cfg.path.exists() and not cfg.overwrite:
        raise ClearctError("exists; pass --overwrite to replace it", cfg.path)
    atomic_write_text(cfg.path, config_template())
    print(f"wrote {cfg.path}: a section per command; edit it and pass --config {cfg.path}")
    return 0
