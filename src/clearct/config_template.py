"""`clearct init`: a commented YAML file with a section per command, generated from the config models so it can
never drift from the flags. Every command reads its own section with ``--config FILE.yaml``."""

from __future__ import annotations

import json
from pathlib import Path

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError
from clearct.config import COMMANDS, InitConfig


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
        lines += ["", f"{name}:  # {help_text}"]
        for field_name, info in model.model_fields.items():
            lines.append(f"  # {info.description or field_name}")
            if info.is_required():
                lines.append(f"  # {field_name}: <required>")
            else:
                lines.append(f"  {field_name}: {_yaml_value(info.get_default(call_default_factory=True))}")
    return "\n".join(lines) + "\n"


def run_init(cfg: InitConfig) -> int:
    if cfg.path.exists() and not cfg.overwrite:
        raise ClearctError("exists; pass --overwrite to replace it", cfg.path)
    atomic_write_text(cfg.path, config_template())
    print(f"wrote {cfg.path}: a section per command; edit it and pass --config {cfg.path}")
    return 0
