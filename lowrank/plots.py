"""Seaborn figures for the chapters: one function per figure, all on a white face.

Imports matplotlib and seaborn lazily so that the core stays torch + numpy only.
"""

from __future__ import annotations


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
