"""Nothing on a built page is wider than its text column, and every formula typesets:
display maths, printed results and tables all fit, and MathJax shows no error box.
Headless Chromium opens each page from disk at a laptop's width, waits for MathJax, and
measures every display equation and cell output whose content is wider than the box it sits
in (the box would have to scroll sideways, or would be cut off).

Usage: python .ci/check_layout.py [--width 1280] [PAGE.html ...]   (default: every chapter)
Exit 0 when everything fits, 1 otherwise (page, element, content and box widths in px),
2 when no Chromium is installed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_offline_math import browser  # noqa: E402

#: a page's width in px (a 13-inch laptop); the book's text column is about 720 px there
WIDTH = 1280
SLACK_PX = 4  # sub-pixel rounding and MathJax's own margins

MEASURE = """
<script>
window.addEventListener('load', () => {
  let measured = false;
  const done = () => {
    if (measured) return;
    measured = true;
    const bad = [];
    const boxes = document.querySelectorAll('article mjx-container[display="true"], '
      + 'article .cell_output .output, article div.math-wrapper');
    for (const el of boxes) {
      if (el.scrollWidth > el.clientWidth + %(slack)d && el.clientWidth > 0) {
        const text = (el.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 70);
        bad.push({tag: el.tagName.toLowerCase(), cls: el.className, content: el.scrollWidth,
                  box: el.clientWidth, text: text});
      }
    }
    for (const el of document.querySelectorAll('article mjx-merror')) {
      bad.push({tag: 'mjx-merror', cls: 'MathJax error', content: 0, box: 0,
                text: (el.getAttribute('data-mjx-error') || el.textContent || '').slice(0, 70)});
    }
    const out = document.createElement('pre');
    out.id = 'layout-check';
    out.textContent = JSON.stringify(bad);
    document.body.appendChild(out);
  };
  const mj = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
  (mj ? mj.then(() => setTimeout(done, 200)) : setTimeout(done, 500));
  setTimeout(done, 25000);  // a page whose MathJax never settles is measured anyway
});
</script>
"""


def overflowing(exe: str, page: Path, width: int, profile: str) -> list[dict]:
    """The page's display maths and outputs whose content is wider than their box."""
    source = page.read_text(encoding="utf-8")
    probe = page.with_name(f".layout-probe-{page.name}")
    head, body_end, tail = source.rpartition("</body>")  # the last one: outputs may quote one
    probe.write_text(head + MEASURE % {"slack": SLACK_PX} + body_end + tail, encoding="utf-8")
    try:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
               f"--window-size={width},1000", "--virtual-time-budget=40000", "--dump-dom",
               probe.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)
        dom = done.stdout
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', dom, flags=re.S)
    if found is None:
        raise RuntimeError(f"{page}: the measuring script did not run: {done.stderr[-300:]}")
    import html

    return json.loads(html.unescape(found.group(1)))


def main(argv: list[str]) -> int:
    """Check the pages; print one line per element that does not fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=WIDTH, help="window width in px")
    parser.add_argument("pages", nargs="*", type=Path)
    args = parser.parse_args(argv)
    exe = browser()
    if exe is None:
        print("check_layout: no Chromium found (apt-get install chromium-headless-shell)")
        return 2
    pages = args.pages or sorted(Path("_build/html/book").glob("[0-9][0-9]_*.html"))
    failed = 0
    for page in pages:
        with tempfile.TemporaryDirectory() as profile:  # a fresh one: a reused profile
            bad = overflowing(exe, page, args.width, profile)  # dumps before load
            failed += bool(bad)
            print(f"{page}: {'ok' if not bad else f'{len(bad)} too wide'}")
            for b in bad:
                if b["tag"] == "mjx-merror":
                    print(f"    a formula MathJax cannot typeset: {b['text']!r}")
                else:
                    print(f"    {b['tag']}.{b['cls']}: content {b['content']} px in a "
                          f"{b['box']} px box: {b['text']!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
