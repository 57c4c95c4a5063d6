"""Show the repository button exactly when the book has a repository address.

Jupyter Book 1 refuses ``html.use_repository_button: true`` without ``repository.url``, and a
placeholder address would link nowhere. So the one setting is ``repository.url`` in
``_config.yml``: empty by default (no button), filled where the book is published, and this
extension turns the button on when it is filled.
"""

from __future__ import annotations


def _enable_when_published(app, config) -> None:
    options = dict(config.html_theme_options or {})
    url = str(options.get("repository_url") or "").strip()
    options["use_repository_button"] = bool(url)
    if not url:
        options.pop("repository_url", None)
    config.html_theme_options = options


def setup(app):
    app.connect("config-inited", _enable_when_published, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
