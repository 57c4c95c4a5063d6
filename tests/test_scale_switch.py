"""LOWRANK_SCALE really selects the book's scale: a second build at another scale re-executes
the pages (from a cache kept per scale) instead of serving the first scale's outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1] / "book"
PAGE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Scale

```{code-cell} ipython3
import lowrank.config

print("scale is", lowrank.config.scale())
```
"""
CONF = f"""
import sys
sys.path.insert(0, {str(BOOK / "_ext")!r})
extensions = ["myst_nb", "scale_cache"]
nb_execution_mode = "cache"
exclude_patterns = ["_build"]
"""


def _build(src: Path, scale: str) -> str:
    env = {**os.environ, "LOWRANK_SCALE": scale}
    subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-b", "html", str(src), str(src / "_build/html")],
        check=True, env=env, capture_output=True, timeout=300,
    )
    return (src / "_build/html/index.html").read_text(encoding="utf-8")


def test_a_full_build_after_a_quick_one_shows_full(tmp_path):
    (tmp_path / "conf.py").write_text(CONF)
    (tmp_path / "index.md").write_text(PAGE)
    assert "scale is quick" in _build(tmp_path, "quick")
    assert "scale is full" in _build(tmp_path, "full")
    assert "scale is quick" in _build(tmp_path, "quick")  # from the quick cache, not re-run
    caches = sorted(p.name for p in (tmp_path / "_build/.jupyter_cache").iterdir())
    assert caches == ["full", "quick"]


def test_cache_folder_per_scale():
    sys.path.insert(0, str(BOOK / "_ext"))
    from scale_cache import per_scale_cache

    assert per_scale_cache(Path("_build"), "full") == Path("_build/.jupyter_cache/full")
    assert per_scale_cache(Path("_build"), "quick") != per_scale_cache(Path("_build"), "full")
