"""A progress bar with time remaining: tqdm when installed, a plain one otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int, desc: str, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` showing a bar with the estimated time remaining."""
    if not enabled:
        yield from items
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # a bare GPU machine may lack tqdm
        tqdm = None
    if tqdm is not None:
        yield from tqdm(items, total=total, desc=desc, mininterval=1.0)
        return
    start = time.perf_counter()
    last = 0.0
    for i, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last > 2.0 or i == total:
            last = now
            eta = (now - start) / i * (total - i)
            done = f"{i}/{total} [{now - start:.0f}s elapsed, ~{eta:.0f}s left]"
            sys.stderr.write(f"\r{desc}: {done}")
            sys.stderr.flush()
    sys.stderr.write("\n")
