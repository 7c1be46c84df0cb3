"""The documentation's commands exist: every `clearct <command> …` line in a fenced code block of README.md and
docs/*.md names a command of the CLI and only flags its parser knows (clearct.cli.build_parser)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from clearct.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^\s*```")
SHELL_BREAKS = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "&"}


def code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, logical line) of every fenced code block; backslash continuations joined."""
    out, inside, pending, start = [], False, "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def clearct_calls(line: str) -> list[list[str]]:
    """The argument lists after each `clearct` (also `python -m clearct`, `.venv/bin/clearct`) in a shell line."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:  # not shell (a Python line with an unbalanced quote)
        return []
    calls = []
    for i, tok in enumerate(tokens):
        if tok == "clearct" or tok.endswith("/clearct"):
            args = []
            for t in tokens[i + 1:]:
                if t in SHELL_BREAKS:
                    break
                args.append(t)
            calls.append(args)
    return calls


def documented_calls() -> list[tuple[str, int, list[str]]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [(f.name, n, args) for f in files for n, line in code_lines(f.read_text()) for args in clearct_calls(line)]


def test_the_scanner_reads_continuations_comments_and_pipes():
    text = "x\n```bash\nclearct crossval --features F \\\n    --folds 5  # a comment --nope\nls | clearct info A\n```\n"
    assert code_lines(text) == [(3, "clearct crossval --features F      --folds 5  # a comment --nope"),
                                (5, "ls | clearct info A")]
    assert [clearct_calls(line) for _, line in code_lines(text)] == [[["crossval", "--features", "F", "--folds",
                                                                      "5"]], [["info", "A"]]]
    assert clearct_calls("torchrun --nproc_per_node=8 -m clearct pretrain --scans s.csv") == [
        ["pretrain", "--scans", "s.csv"]]


def test_every_documented_command_and_flag_exists():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    calls = documented_calls()
    assert len(calls) > 30  # the docs do show commands; a scanner that finds none would pass vacuously
    wrong = []
    for name, n, args in calls:
        if not args or args[0] in ("--help", "-h", "--version"):
            continue
        command = args[0]
        if command not in commands:
            wrong.append(f"{name}:{n}: no command {command!r}")
            continue
        known = {o for a in commands[command]._actions for o in a.option_strings}
        for arg in args[1:]:
            flag = arg.split("=", 1)[0]
            if not flag.startswith("--") or "<" in flag or "…" in flag or flag == "--":
                continue  # a value or a placeholder (DIR, <name>, …)
            if flag not in known:
                wrong.append(f"{name}:{n}: clearct {command} has no flag {flag}")
    assert not wrong, "\n".join(wrong)


INLINE = re.compile(r"`([^`\n]+)`")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]")
# torchrun's and Slurm's flags, benchmarks/scale.py's --full, and the CLI rules' placeholder for a boolean
NOT_OURS = {"--nproc_per_node", "--nnodes", "--requeue", "--gpus-per-node", "--full", "--x", "--no-x"}


def test_flags_in_the_prose_exist():
    """Inline code (`--flag`, `clearct command --flag …`) outside the code blocks names flags that exist: of that
    command where the span names one, else of some command."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    per_command = {name: {o for a in sub._actions for o in a.option_strings} for name, sub in commands.items()}
    every = set().union(*per_command.values())
    wrong = []
    for f in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        inside = False
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if FENCE.match(line):
                inside = not inside
            if inside:
                continue
            for span in INLINE.findall(line):
                words = span.split()
                known = per_command[words[1]] if len(words) > 1 and words[0] == "clearct" and \
                    words[1] in per_command else every
                wrong += [f"{f.name}:{n}: {flag}" for flag in FLAG.findall(span)
                          if flag not in known and flag not in NOT_OURS]
    assert not wrong, "\n".join(wrong)


def test_the_package_carries_licence_citation_and_changelog():
    import tomllib
    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    licence = (ROOT / "LICENSE").read_text()
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in licence
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["version"] == project["version"]
    paper = citation["preferred-citation"]
    assert paper["title"] == "Abnormality-Driven Representation Learning for Radiology Imaging"
    assert [a["family-names"] for a in paper["authors"]] == ["Ligero", "Lenz", "Wölflein", "El Nahhas", "Truhn",
                                                             "Kather"]
    assert f"## {project['version']}" in (ROOT / "CHANGELOG.md").read_text()
