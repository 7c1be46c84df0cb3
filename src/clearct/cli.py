"""Command line: a thin layer that turns flags (and ``--config FILE.yaml``) into a config model and calls the
Python API function registered for the command in :data:`clearct.config.COMMANDS`.

Building the parser imports only pydantic and the config models, so ``--help`` never imports torch.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clearct import __version__
from clearct.common.device import reuse_freed_memory
from clearct.common.errors import ClearctError
from clearct.config import COMMANDS, CommandConfig, command_function, section_type


def _flag_kwargs(annotation: Any) -> dict[str, Any]:
    """argparse options for a field type: choices for Literal, booleans as --x/--no-x, lists as 'a,b'."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_kwargs(args[0])
    if origin is typing.Literal:
        return {"choices": list(typing.get_args(annotation)), "metavar": "{" + ",".join(map(str, args)) + "}"}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is list:
        return {"metavar": "A,B,…"}
    if annotation in (int, float):
        return {"type": annotation}
    return {}


def _add_fields(parser: argparse.ArgumentParser, model: type[CommandConfig], prefix: str = "") -> None:
    """One flag per field; a nested section's fields become ``--<section>-<field>`` (dest ``section.field``)."""
    for field_name, info in model.model_fields.items():
        inner = section_type(info.annotation)
        if inner is not None:
            _add_fields(parser, inner, f"{prefix}{field_name}.")
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        kwargs = _flag_kwargs(info.annotation)
        if info.is_required():
            default = ""
        elif prefix and info.default is None:
            default = " (default: the workflow's preset, else the command's default)"
        else:
            default = f" (default: {info.default})"
        help_line = ((info.description or "") + default).replace("%", "%%")  # argparse formats help with %
        if extra.get("positional") and not prefix:
            kwargs.pop("action", None)
            # optional positionals (the value may come from --config): argparse would check its SUPPRESS default
            # against choices, so the model's Literal validates the value instead
            kwargs.pop("choices", None)
            parser.add_argument(field_name, nargs="?", help=help_line, **kwargs)
        else:
            flag = "--" + (prefix + field_name).replace(".", "-").replace("_", "-")
            parser.add_argument(flag, dest=prefix + field_name, help=help_line, **kwargs)


def _add_command(sub: argparse._SubParsersAction, name: str, model: type[CommandConfig], help_text: str) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text, argument_default=argparse.SUPPRESS)
    _add_fields(parser, model)
    parser.add_argument("--config", type=Path, help="YAML file with the same fields (flags override it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clearct",
        description="CLEAR for CT: contrastive slice encoders + attention-MIL for whole-scan prediction.",
    )
    parser.add_argument("--version", action="version", version=f"clearct {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (model, _target, help_text) in COMMANDS.items():
        _add_command(sub, name, model, help_text)
    return parser


def load_config(command: str, flags: dict[str, Any], config_file: Path | None = None) -> CommandConfig:
    """Merge a YAML file (either the command's fields or a mapping with a section per command) with flags."""
    import yaml

    model = COMMANDS[command][0]
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ClearctError(f"cannot read config ({exc})", config_file) from exc
        if not isinstance(loaded, dict):
            raise ClearctError("a config file must hold a mapping", config_file)
        # a file written by `clearct init` has one section per command; a plain file holds the fields directly
        section = loaded.get(command, loaded)
        values = {k: v for k, v in section.items() if k not in COMMANDS or k in model.model_fields}
    return model(**_merge(values, _nested(flags)))


def _nested(flags: dict[str, Any]) -> dict[str, Any]:
    """Flags with dotted dests (``pretrain.lr``) as nested mappings."""
    out: dict[str, Any] = {}
    for key, value in flags.items():
        *path, leaf = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def _is_positional(model: type[CommandConfig], field: str) -> bool:
    info = model.model_fields.get(field)
    extra = info.json_schema_extra if info is not None else None
    return isinstance(extra, dict) and bool(extra.get("positional"))


def _format_validation(command: str, exc: ValidationError) -> str:
    model = COMMANDS[command][0]
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)] or ["config"]
        if len(loc) == 1 and _is_positional(model, loc[0]):
            name = loc[0]
        else:
            name = "--" + "-".join(loc).replace("_", "-")
        parts.append(f"{name}: {err['msg']}")
    return f"clearct {command}: error: " + "; ".join(parts)


def _os_error_line(exc: OSError) -> str:
    """``PATH: reason``; a temporary file of an atomic write is named by its folder, the place the user chose."""
    where = Path(exc.filename) if exc.filename is not None else None
    if where is not None and where.name.startswith(".") and where.name.endswith("tmp"):
        where = where.parent
    return f"{where or 'file system'}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.raiseExceptions = False  # a full disk must not turn each log line into a traceback on the terminal
    reuse_freed_memory()
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    command = ns.pop("command", None)
    if command is None:
        parser.print_help()
        return 0
    config_file = ns.pop("config", None)
    try:
        cfg = load_config(command, ns, config_file)
    except ValidationError as exc:
        print(_format_validation(command, exc), file=sys.stderr)
        return 2
    except ClearctError as exc:
        print(f"clearct {command}: error: {exc}", file=sys.stderr)
        return 2
    try:
        result = command_function(command)(cfg)
    except ClearctError as exc:
        print(f"clearct {command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output folder that is read-only or full: the file and the reason, no traceback
        print(f"clearct {command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clearct {command}: interrupted", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
