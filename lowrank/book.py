"""What a chapter's first cell needs: threads, figure style, number formatting and glue.

``from lowrank.book import glue, sci, span, setup`` then ``setup()`` is the whole set-up of a
chapter. The formatters turn measured numbers into prose text, since a glued number cannot
sit inside LaTeX: ``sci(6.4e-11) == '6 × 10⁻¹¹'``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def setup(threads: int = 1) -> None:
    """One CPU thread (two threads on a chapter's small matrices only oversubscribe a small
    machine) and the book's figure style."""
    torch.set_num_threads(threads)
    book_style()
    notices_as_one_line()


def notices_as_one_line() -> None:
    """Print the package's notices (:class:`lowrank.runner.cache.Notice`) as 'note: …', one
    line without the source file and line that warnings show (a path of the machine)."""
    import warnings

    from lowrank.runner.cache import Notice

    shown = warnings.formatwarning
    if getattr(shown, "_lowrank", False):
        return

    def formatwarning(message, category, filename, lineno, line=None):
        if issubclass(category, Notice):
            return f"note: {message}\n"
        return shown(message, category, filename, lineno, line)

    formatwarning._lowrank = True  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning


def book_style() -> None:
    """Seaborn's whitegrid theme with white figure faces, readable in dark mode too."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    mpl.rcParams.update(
        {
            "figure.facecolor": "white",
            "axes.facecolor": "white",
            "savefig.facecolor": "white",
            "figure.dpi": 100,
            "figure.autolayout": False,
        }
    )


def lam_label(lam: float) -> str:
    """A legend label for one weight decay: 'λ = 0' or 'λ = 0.001' (format ``g``)."""
    return "λ = 0" if lam == 0 else f"λ = {lam:g}"


def sci(value: float, digits: int = 0) -> str:
    """``value`` as 'm × 10ⁿ' with ``digits`` decimals; '10ⁿ' when m is 1 and digits is 0."""
    if value == 0:
        return "0"
    if digits < 0:
        raise ValueError(f"digits must be >= 0, got {digits}")
    mantissa, exponent = f"{value:.{digits}e}".split("e")
    power = "10" + str(int(exponent)).translate(_SUPERSCRIPT)
    if mantissa in ("1", "-1") and digits == 0:
        return power if mantissa == "1" else f"−{power}"
    return f"{mantissa.replace('-', '−')} × {power}"


def span(lo: float, hi: float, fmt: str = "{:.2g}") -> str:
    """'lo–hi' in format ``fmt``, or one number when both ends round alike."""
    a, b = fmt.format(lo), fmt.format(hi)
    return a if a == b else f"{a}–{b}"


def by_lambda(values: Mapping[float, float] | Any, fmt: str = "{:.2g}") -> str:
    """'a at λ = 0, b at λ = 10⁻³ and c at λ = 10⁻²' from a mapping (or Series) λ → value."""
    items: Iterable[tuple[float, float]] = values.items()
    parts = [f"{fmt.format(v)} at λ = {sci(lam)}" for lam, v in items]
    if not parts:
        raise ValueError("values must hold at least one λ")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def glue(name: str, value: Any, fmt: str | None = None) -> Any:
    """Glue ``value`` (formatted with ``fmt`` when given) under ``name`` for ``{glue:text}``."""
    from myst_nb import glue as _glue

    text = value if fmt is None else fmt.format(value)
    _glue(name, text, display=False)
    return value


def glue_all(values: Mapping[str, Any]) -> None:
    """Glue every ``name → text`` of one section's measured numbers at once."""
    for name, value in values.items():
        glue(name, value)


def listing(values: Iterable[float], fmt: str = "{:.2g}") -> str:
    """'a, b, c' with every value in format ``fmt``."""
    return ", ".join(fmt.format(v) for v in values)


def table(frame: Any, fmt: str = "{:.3g}", index_fmt: str = "{:g}") -> Any:
    """A result table as a page prints it: float cells in ``fmt``, float index labels in
    ``index_fmt`` (so a λ index reads '0.01', not '0.010000'); other cells as they are."""
    import pandas as pd

    def text(values: Any, form: str) -> Any:
        return values.map(lambda v: "" if pd.isna(v) else form.format(v))

    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = text(out[col], fmt)
    if isinstance(out.index, pd.MultiIndex):
        out.index = out.index.set_levels(
            [text(lvl, index_fmt) if pd.api.types.is_float_dtype(lvl) else lvl
             for lvl in out.index.levels]
        )
    elif pd.api.types.is_float_dtype(out.index):
        out.index = pd.Index(text(out.index, index_fmt), name=out.index.name)
    return out


def provenance_table(*names: str) -> Any:
    """Where the named experiments' stored tables came from (scale, device, precision, date),
    from their sidecars, as a compact table; every experiment's, with its chapter, if none
    is named (the status page)."""
    import pandas as pd

    from lowrank.runner.registry import provenance

    rows = [r for r in provenance() if not names or r["experiment"] in names]
    if names and len(rows) != len(names):
        known = {r["experiment"] for r in rows}
        raise ValueError(f"unknown experiments: {sorted(set(names) - known)}")
    frame = pd.DataFrame(rows).set_index("experiment")
    frame["date"] = frame["date"].str[:16].str.replace("T", " ")
    frame["precision"] = [f"{p} (emulated)" if e is True else p
                          for p, e in zip(frame["precision"], frame["emulated"], strict=True)]
    columns = ["scale", "device", "precision", "date", "wall time (s)", "rows"]
    return frame[columns if names else ["chapter", "stored", *columns]]
