"""Keep the book's execution cache per scale, and re-read every page when the scale changes.

jupyter-cache keys a notebook on its cells only, and Sphinx re-reads a page only when its
source changes, so ``LOWRANK_SCALE=full jupyter-book build .`` after a quick build used to
finish in seconds with the quick book. The scale (read by ``lowrank.config.scale``, the one
place environment variables are read) is now a Sphinx configuration value that invalidates the
environment when it changes, and the execution cache lives in ``_build/.jupyter_cache/<scale>``.
"""

from __future__ import annotations

from pathlib import Path


def per_scale_cache(build_dir: Path, current_scale: str) -> Path:
    """The execution-cache folder for one scale."""
    return Path(build_dir) / ".jupyter_cache" / current_scale


def _select_scale(app, config) -> None:
    from lowrank.config import scale

    current = scale()
    config.lowrank_scale = current
    config.nb_execution_cache_path = str(per_scale_cache(Path(app.outdir).parent, current))


def setup(app):
    # "env": a change of value makes Sphinx re-read (and so re-execute) every page.
    app.add_config_value("lowrank_scale", "quick", "env")
    app.connect("config-inited", _select_scale, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
