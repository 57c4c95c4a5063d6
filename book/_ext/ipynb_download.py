"""Offer each executed chapter as a .ipynb download that reads like the page.

sphinx-book-theme shows a ".ipynb" download button only when the page context has an
``ipynb_source``, which MyST-NB sets for .ipynb sources but not for text notebooks. We copy
the executed notebook that MyST-NB writes to ``_build/jupyter_execute`` next to the page's
other sources and point the button at it.

A notebook's markdown cells hold MyST roles and directives (``{glue:text}``, ``{prf:ref}``,
``{cite}``, ``{eq}``, proof and admonition boxes) that Jupyter shows as raw text. The copy
offered for download has them resolved: glued values from the run, reference texts, equation
numbers from the rendered page, author-year citations, and boxes as bold-titled quotes.
"""

from __future__ import annotations

import ast
import html
import json
import re
from pathlib import Path

ROLE = re.compile(r"\{([a-z:]+)\}`([^`]*)`")
EXPLICIT = re.compile(r"^(.*?)\s*<([^<>]+)>$", re.S)
EQNO = re.compile(r'<span class="eqno">\(([^)]*)\)<a class="headerlink" href="#equation-([^"]+)"')
DIRECTIVE = re.compile(r"^(`{3,})\{([\w:-]+)\}[ \t]*(.*)$")
TARGET = re.compile(r"^\([\w-]+\)=\s*$")


def glued_values(glue_file: Path) -> dict[str, str]:
    """The ``text/plain`` of every glued value, as ``{glue:text}`` shows it."""
    if not glue_file.is_file():
        return {}
    values = {}
    for name, output in json.loads(glue_file.read_text(encoding="utf-8")).items():
        text = output.get("data", {}).get("text/plain", "")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        values[name] = value
    return values


def _glue_text(values: dict, target: str) -> str:
    name, _, fmt = target.partition(":")
    if name not in values:
        return target
    value = values[name]
    return format(value, fmt) if fmt else str(value)


def cite_texts(bibfile: Path) -> dict[str, str]:
    """'Author (year)', 'A and B (year)' or 'A et al. (year)' for every key of a .bib file."""
    from pybtex.database import parse_file

    texts = {}
    for key, entry in parse_file(str(bibfile)).entries.items():
        names = [" ".join(p.last_names) for p in entry.persons.get("author", [])]
        who = (names[0] if len(names) == 1 else f"{names[0]} and {names[1]}" if len(names) == 2
               else f"{names[0]} et al.") if names else key
        texts[key] = f"{who.replace('{', '').replace('}', '')} ({entry.fields.get('year', 'n.d.')})"
    return texts


def resolve_roles(text: str, glue: dict, cites: dict[str, str], eqs: dict[str, str]) -> str:
    """Replace every MyST role in ``text`` with what the rendered page shows."""

    def one(match: re.Match) -> str:
        role, body = match.group(1), match.group(2)
        explicit = EXPLICIT.match(body)
        label = explicit.group(2) if explicit else body
        if role in ("glue:text", "glue", "glue:md"):
            return _glue_text(glue, body)
        if role == "cite":
            return "; ".join(cites.get(k.strip(), k.strip()) for k in body.split(","))
        if role == "eq":
            return f"({eqs[label]})" if label in eqs else label
        return explicit.group(1) if explicit else label

    return ROLE.sub(one, text)


def resolve_directives(text: str) -> str:
    """Proof and admonition boxes as bold-titled quotes; option lines and targets dropped."""
    out: list[str] = []
    fences: list[str] = []
    for line in text.split("\n"):
        match = DIRECTIVE.match(line)
        if match:
            fence, name, title = match.groups()
            kind = name.split(":")[-1]
            heading = title if name == "admonition" else f"{kind.title()} {title}".strip()
            if kind == "proof":
                heading = "Proof"
            fences.append(fence)
            out.append(f"> **{heading.rstrip('.')}.**")
            continue
        if fences and line.strip() == fences[-1]:
            fences.pop()
            out.append("")
            continue
        if fences and re.match(r"^:[\w-]+:", line):
            continue
        if TARGET.match(line):
            continue
        out.append(("> " * len(fences) + line).rstrip() if fences else line)
    return "\n".join(out)


def readable_notebook(notebook: dict, glue: dict, cites: dict, eqs: dict) -> dict:
    """A copy of ``notebook`` whose markdown cells show values and readable references."""
    cells = []
    for cell in notebook["cells"]:
        if cell.get("cell_type") == "markdown":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            source = resolve_roles(resolve_directives(source), glue, cites, eqs)
            cell = {**cell, "source": source}
        cells.append(cell)
    return {**notebook, "cells": cells}


def _add_ipynb_source(app, pagename, templatename, context, doctree) -> None:
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.is_file():
        return
    eqs = {label: html.unescape(number) for number, label in EQNO.findall(context.get("body", ""))}
    bibfiles = [Path(app.srcdir) / b for b in getattr(app.config, "bibtex_bibfiles", [])]
    cites: dict[str, str] = {}
    for bib in bibfiles:
        cites.update(cite_texts(bib))
    glue = glued_values(executed.parent / f"{executed.stem}.glue.json")
    notebook = readable_notebook(json.loads(executed.read_text(encoding="utf-8")), glue, cites, eqs)
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(notebook, ensure_ascii=False, indent=1), encoding="utf-8")
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    # Before sphinx-book-theme builds its header buttons (priority 500).
    app.connect("html-page-context", _add_ipynb_source, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
