"""A tiny report model rendered to both Markdown and self-contained-folder HTML (images and links by relative
path). Inline markup, in paragraphs and table cells alike: `code` spans, **bold** and [text](path) links."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from clearct.common.atomic import atomic_write_text


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    path: str  # relative to the report's folder
    caption: str


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)

    def add(self, title: str, *paragraphs: str) -> Section:
        section = Section(title, list(paragraphs))
        self.sections.append(section)
        return section


def to_markdown(report: Report) -> str:
    out = [f"# {report.title}", ""]
    for s in report.sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        for t in s.tables:
            if t.caption:
                out += [f"*{t.caption}*", ""]
            out.append("| " + " | ".join(t.header) + " |")
            out.append("|" + "---|" * len(t.header))
            out += ["| " + " | ".join(r) + " |" for r in t.rows]
            out.append("")
        for f in s.figures:
            out += [f"![{f.caption}]({f.path})", "", f"*{f.caption}*", ""]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d2433;line-height:1.45}
h1{border-bottom:2px solid #2a6fdb;padding-bottom:.3em}h2{margin-top:2em;color:#2a6fdb}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ccd3e0;padding:.3em .7em;
text-align:right}th{background:#eef3fb}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #dde3ee}figcaption{font-size:.9em;color:#556}
code{background:#f3f5f9;padding:0 .25em}
"""


def to_html(report: Report) -> str:
    e = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(report.title)}</h1>",
    ]
    for s in report.sections:
        out.append(f"<h2>{e(s.title)}</h2>")
        out += [f"<p>{_inline(p)}</p>" for p in s.paragraphs]
        for t in s.tables:
            out.append("<table>")
            if t.caption:
                out.append(f"<caption>{e(t.caption)}</caption>")
            out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in t.header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in t.rows]
            out.append("</table>")
        for f in s.figures:
            out.append(f"<figure><img src='{e(f.path)}' alt='{e(f.caption)}'><figcaption>{e(f.caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


_MARKUP = re.compile(r"`([^`]*)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> str:
    """Escape, rendering `code` spans, **bold** and [text](path) links (the only inline markup the reports use)."""
    out, pos = [], 0
    for m in _MARKUP.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        code, bold, label, href = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{_inline(bold)}</strong>")
        else:
            out.append(f"<a href='{html.escape(href)}'>{_inline(label)}</a>")
        pos = m.end()
    return "".join(out) + html.escape(text[pos:])


def write_report(report: Report, folder: str | Path, stem: str = "report") -> tuple[Path, Path]:
    folder = Path(folder)
    md, page = folder / f"{stem}.md", folder / f"{stem}.html"
    atomic_write_text(md, to_markdown(report))
    atomic_write_text(page, to_html(report))
    return md, page
