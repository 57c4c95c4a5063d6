"""Offer each executed chapter as a .ipynb download.

sphinx-book-theme shows a ".ipynb" download button only when the page context has an
``ipynb_source``, which MyST-NB sets for .ipynb sources but not for text notebooks. We copy
the executed notebook that MyST-NB writes to ``_build/jupyter_execute`` next to the page's
other sources and point the button at it.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def _add_ipynb_source(app, pagename, templatename, context, doctree) -> None:
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.is_file():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    # Before sphinx-book-theme builds its header buttons (priority 500).
    app.connect("html-page-context", _add_ipynb_source, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
