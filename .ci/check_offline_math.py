"""The built book typesets its mathematics offline: headless Chromium loads a page from disk
(no network, so a CDN MathJax would never arrive) and no raw TeX delimiter stays visible.

Usage: python .ci/check_offline_math.py [_build/html/book/01_preliminaries.html ...]
Exit 0 when every page is typeset, 1 otherwise (with the page and what is left), 2 when no
Chromium is installed.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
PAGES = ("book/01_preliminaries.html", "book/09_merging_deep_linear.html", "book/errata.html")


def browser() -> str | None:
    """The first headless-capable Chromium on PATH (or in Debian's library folder)."""
    for name in BROWSERS:
        found = shutil.which(name) or (
            f"/usr/lib/chromium/{name}" if Path(f"/usr/lib/chromium/{name}").exists() else None
        )
        if found:
            return found
    return None


def rendered_dom(exe: str, page: Path, profile: str) -> str:
    """The page's DOM after its scripts ran (MathJax typesets within the virtual time budget)."""
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
           "--virtual-time-budget=20000", "--dump-dom", page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def visible_text(dom: str) -> str:
    """The DOM's text outside scripts, styles and MathJax's own assistive copies."""
    dom = re.sub(r"<(script|style|mjx-assistive-mml)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", " ", dom))


def main(argv: list[str]) -> int:
    exe = browser()
    if exe is None:
        print("check_offline_math: no Chromium found (apt-get install chromium-headless-shell)")
        return 2
    root = Path("_build/html")
    pages = [Path(p) for p in argv] or [root / p for p in PAGES]
    failed = 0
    with tempfile.TemporaryDirectory() as profile:
        for page in pages:
            dom = rendered_dom(exe, page, profile)
            typeset = dom.count("<mjx-container")
            raw = re.findall(r"\\\(|\\\[|\$\$", visible_text(dom))
            ok = typeset > 0 and not raw
            failed += not ok
            print(f"{page}: {typeset} formulas typeset, {len(raw)} raw TeX delimiters visible"
                  f" -> {'ok' if ok else 'FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
