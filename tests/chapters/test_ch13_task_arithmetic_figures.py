"""Chapter 13's tables and figures on the rows of a tiny run."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from lowrank.chapters import ch13_task_arithmetic as ch13  # noqa: E402
from lowrank.chapters import ch13_task_arithmetic_figures as fig13  # noqa: E402


def test_tables_and_figures_of_a_tiny_run():
    spec = {**ch13.TA_MINILM.quick(), "n": 4, "n_test": 4, "steps": 2, "rhos": [0.0, 1.0]}
    df = pd.DataFrame(ch13.run_ta(spec, torch.device("cpu")))
    gaps = fig13.gaps(df)
    assert ("gd", spec["lam_main"], 1.0) in gaps.index
    t = fig13.eval_table(df)
    want = t[("loss", "task_arithmetic")] - t[("loss", "individual")]
    got = gaps["loss gap task_arithmetic"]
    assert abs(got.loc[("gd", 0.0, 0.0)] - want.xs(("gd", 0.0, 0.0)).mean()) < 1e-12
    for fig in (fig13.merging_figure(df, spec["lam_main"], spec["adam_lam_main"]),
                fig13.mechanism_figure(df, spec["lam_main"]), fig13.stable_rank_figure(df)):
        assert fig.get_size_inches()[0] <= 7.5
