"""Command line: a thin layer that turns flags (and ``--config FILE.yaml``) into a config model and calls the
Python API function registered for the command in :data:`clearct.config.COMMANDS`.

Building the parser imports only pydantic and the config models, so ``--help`` never imports torch.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clearct import __version__
from clearct.common.device import reuse_freed_memory
from clearct.common.errors import ClearctError
from clearct.config import (
    COMMANDS,
    CommandConfig,
    command_function,
    section_source,
    section_type,
    suggest,
    unknown_keys,
)


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


REQUIRED_TITLE = "required (as flags or in the --config file)"


def _cli_value(value: Any) -> str:
    """A default as it is typed on the command line: lists as ``a,b``, booleans as the flag that gives them."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _default_text(info: Any, flag: str, source: Any = None) -> str:
    """The one default a flag's help states: none when the description already says it (or there is none to
    state); a section field says that the workflow's preset comes first, then the command's own default."""
    said = re.search(r"\bdefault\b(?! rule)", (info.description or "").lower()) is not None  # "default rule": a name
    if source is not None:  # a workflow's section field: None means "the preset's value, else the command's"
        if said:
            return " (the workflow's preset may set it)"
        own = source.get_default(call_default_factory=True)
        shown = ("--" if own else "--no-") + flag[2:] if isinstance(own, bool) else _cli_value(own)
        return f" (default: the workflow's preset, else {'none' if own is None else shown})"
    if info.is_required() or said or info.default is None:
        return ""
    if isinstance(info.default, bool):
        return f" (default: {flag if info.default else '--no-' + flag[2:]})"
    return f" (default: {_cli_value(info.default)})"


def _add_fields(parser: argparse.ArgumentParser, model: type[CommandConfig], prefix: str = "",
                required: list[str] | None = None) -> None:
    """One flag per field; a nested section's fields become ``--<section>-<field>`` (dest ``section.field``).
    Required fields go into the parser's "required" group, and ``required`` collects their usage words."""
    source = section_source(model)
    group = next((g for g in parser._action_groups if g.title == REQUIRED_TITLE), None)
    for field_name, info in model.model_fields.items():
        inner = section_type(info.annotation)
        if inner is not None:
            _add_fields(parser, inner, f"{prefix}{field_name}.", required)
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        kwargs = _flag_kwargs(info.annotation)
        flag = "--" + (prefix + field_name).replace(".", "-").replace("_", "-")
        own = source.model_fields[field_name] if source is not None else None
        help_line = ((info.description or "") + _default_text(info, flag, own)).replace("%", "%%")  # argparse %
        target = group if info.is_required() and group is not None else parser
        if extra.get("positional") and not prefix:
            kwargs.pop("action", None)
            # optional positionals (the value may come from --config): argparse would check its SUPPRESS default
            # against choices, so the model's Literal validates the value instead
            kwargs.pop("choices", None)
            target.add_argument(field_name, nargs="?", help=help_line, **kwargs)
            word = field_name.upper()
        else:
            if kwargs.get("action") is None:
                kwargs.setdefault("metavar", field_name.upper())  # not argparse's SECTION.FIELD
            target.add_argument(flag, dest=prefix + field_name, help=help_line, **kwargs)
            word = f"{flag} {kwargs.get('metavar', '')}".strip()
        if required is not None and (info.is_required() or extra.get("positional")):
            required.append(word if info.is_required() else f"[{word}]")


def _add_command(sub: argparse._SubParsersAction, name: str, model: type[CommandConfig], help_text: str) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text, argument_default=argparse.SUPPRESS,
                            allow_abbrev=False)
    parser.add_argument_group(REQUIRED_TITLE)
    words: list[str] = []
    _add_fields(parser, model, required=words)
    parser.add_argument("--config", type=Path, help="YAML file with the same fields (flags override it)")
    # the usage names what a command needs (argparse would bracket every flag: values may come from --config)
    parser.usage = " ".join([f"clearct {name}", *words, "[options]"])
    group = next(g for g in parser._action_groups if g.title == REQUIRED_TITLE)
    parser._action_groups.remove(group)
    if group._group_actions:  # listed first: what a command needs before what it can be told
        parser._action_groups.insert(0, group)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, as every other refusal (usage: ``--help``)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clearct",
        description="CLEAR for CT: contrastive slice encoders + attention-MIL for whole-scan prediction.",
        allow_abbrev=False,
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
        sectioned = isinstance(loaded.get(command), dict)
        section = loaded[command] if sectioned else loaded
        values = {k: v for k, v in section.items() if k not in COMMANDS or k in model.model_fields}
        unknown = unknown_keys(model, values)
        if unknown:
            key, close = unknown[0]
            if close is None and not sectioned and "." not in key:  # a misspelt section name?
                close = suggest(key, COMMANDS)
            where = f" in section {command}" if sectioned else ""
            hint = f" (did you mean {close}?)" if close else ""
            more = f"; {len(unknown) - 1} more unknown key(s)" if len(unknown) > 1 else ""
            raise ClearctError(f"unknown key {key}{where}{hint}{more}", config_file)
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


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The command parsers of :func:`build_parser`'s parser, by name."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _unknown_argument(parser: argparse.ArgumentParser, command: str, extras: list[str]) -> str:
    """One line for the first argument the command does not know, with the closest flag when one is close."""
    flags = [e for e in extras if e.startswith("-")]
    if not flags:
        return f"unexpected argument {extras[0]!r}"
    word = flags[0].split("=", 1)[0]
    sub = _subcommands(parser)[command]
    known = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    close = suggest(word, known)
    return f"unknown flag {word}" + (f" (did you mean {close}?)" if close else f"; clearct {command} --help lists them")


def _refused(command: str, line: str) -> int:
    """A refused command: its one line on stderr and, when its run folder already has a log, in the log too."""
    import logging

    text = f"clearct {command}: error: {line}"
    log = logging.getLogger("clearct")
    if any(isinstance(h, logging.FileHandler) for h in log.handlers):  # else logging would print it a second time
        log.error(text)
    print(text, file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.raiseExceptions = False  # a full disk must not turn each log line into a traceback on the terminal
    reuse_freed_memory()
    parser = build_parser()
    args = sys.argv[1:] if argv is None else list(argv)
    if args and not args[0].startswith("-") and args[0] not in COMMANDS:
        close = suggest(args[0], COMMANDS)
        print(f"clearct: error: unknown command {args[0]}" + (f" (did you mean {close}?)" if close else "")
              + f"; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        parsed, extras = parser.parse_known_args(args)
    except SystemExit as exc:  # --help, --version, or argparse's one-line refusal (already printed)
        return exc.code if isinstance(exc.code, int) else 0
    ns = vars(parsed)
    command = ns.pop("command", None)
    if command is None and extras:
        print(f"clearct: error: unknown argument {extras[0]} (clearct --help lists the commands)", file=sys.stderr)
        return 2
    if command is None:
        parser.print_help()
        return 0
    if extras:
        print(f"clearct {command}: error: {_unknown_argument(parser, command, extras)}", file=sys.stderr)
        return 2
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
        return _refused(command, str(exc))
    except OSError as exc:  # an output folder that is read-only or full: the file and the reason, no traceback
        return _refused(command, _os_error_line(exc))
    except KeyboardInterrupt:
        print(f"clearct {command}: interrupted", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
