"""Chapter 11, Figure 6: Fashion-MNIST tasks, the fig6 runs and the merge gaps."""

from __future__ import annotations

import pytest
import torch

from lowrank.chapters import ch11_fashion_mnist as ch11
from lowrank.core.engine import gd
from lowrank.core.models import init_mlp
from lowrank.data import fashion_mnist


def _seeded_images() -> torch.Tensor:
    return torch.rand(4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _off_task_block(x: torch.Tensor, lam: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    w0 = init_mlp([x.shape[1], 5, 3, 1], members=1, seed=1)
    y = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    w, _ = gd(w0, x.unsqueeze(0), y, lam, eta=0.1, steps=steps, backward=True)
    return w[0][0, :, 4:], w0[0][0, :, 4:]


TINY = {
    "pool": 1,
    "n_train": 6,
    "n_test": 4,
    "widths": [5, 3],
    "eta": 0.1,
    "lams": [0.0, 0.5],
    "init_scales": [1.0],
    "steps": 4,
    "record_every": 2,
    "seeds": 1,
    "dtype": "float64",
}


@pytest.fixture
def fake_data(monkeypatch):
    images = torch.randint(1, 256, (30, 4, 4), generator=torch.Generator().manual_seed(0))
    feats = fashion_mnist.image_features(images)
    labels = torch.arange(30) % 10
    monkeypatch.setattr(ch11, "load_features", lambda pool, folder=None: (feats, labels))


def test_padding_makes_tasks_orthogonal_and_keeps_length():
    a, b = torch.rand(5, 7, dtype=torch.float64), torch.rand(6, 7, dtype=torch.float64)
    left, right = ch11.pad_task(a, "left"), ch11.pad_task(b, "right")
    assert left.shape == (5, 14) and right.shape == (6, 14)
    assert torch.count_nonzero(left @ right.T) == 0
    torch.testing.assert_close(left.norm(dim=1), a.norm(dim=1))
    with pytest.raises(ValueError, match="side"):
        ch11.pad_task(a, "top")


def test_split_indices_disjoint_and_seeded():
    idx = ch11.split_indices(50, 10, 7, seed=3)
    allidx = torch.cat(list(idx.values()))
    assert [len(v) for v in idx.values()] == [10, 10, 7, 7]
    assert len(set(allidx.tolist())) == 34
    again = ch11.split_indices(50, 10, 7, seed=3)
    assert all(torch.equal(idx[k], again[k]) for k in idx)
    with pytest.raises(ValueError, match="2·\\(n_train \\+ n_test\\)"):
        ch11.split_indices(50, 20, 6, seed=0)


def test_make_tasks_roles():
    feats = fashion_mnist.image_features(torch.randint(1, 255, (40, 4, 4)))
    labels = torch.arange(40) % 10
    tasks = ch11.make_tasks(feats, labels, n_train=8, n_test=5, seed=0)
    t1, t2, same = tasks["task1"], tasks["task2"], tasks["same"]
    assert torch.count_nonzero(t1.x_train @ t2.x_train.T) == 0
    assert torch.count_nonzero(t1.x_train @ t2.x_test.T) == 0
    # task 2 and "same" share pool B: same images, other side, inverted labels
    assert torch.equal(t2.x_train[:, 16:], same.x_train[:, :16])
    assert torch.equal(t2.y_train, -same.y_train)
    assert not torch.equal(t1.x_train, same.x_train)


def test_off_task_weights_only_decay():
    """What chapter 11 checks: zero-padded inputs leave the other block to decay alone."""
    x = ch11.pad_task(_seeded_images(), "left")
    block, block0 = _off_task_block(x, lam=0.5, steps=20)
    torch.testing.assert_close(block, (1 - 0.05) ** 20 * block0, rtol=1e-12, atol=0)


def test_off_task_identity_fails_when_inputs_leak():
    x = ch11.pad_task(_seeded_images(), "left")
    x[:, 4:] = 0.5  # no longer orthogonal to the other task: gradients reach the block
    block, block0 = _off_task_block(x, lam=0.5, steps=20)
    err = (block - 0.95**20 * block0).norm() / block.norm()
    assert err > 1e-6


def test_fig6_rows_and_exact_decay(fake_data):
    rows = ch11.FIG6.run(TINY, torch.device("cpu"), show_progress=False)
    import pandas as pd

    df = pd.DataFrame(rows)
    assert set(df.net) >= {"task1", "task2", "same", "merged", "merged_same"}
    assert sorted(df.step.unique()) == [0, 2, 4]
    ratio = df[df.metric == "inactive_ratio"]
    expected = (1 - 0.1 * ratio.lam) ** ratio.step
    assert ((ratio.value - expected).abs() < 1e-12).all()
    loss = df[(df.metric == "loss") & (df.split == "train")]
    assert loss.value.between(0, 10).all()
    again = pd.DataFrame(ch11.FIG6.run(TINY, torch.device("cpu"), show_progress=False))
    assert df.equals(again)  # seeded: the same numbers twice


def test_fig6_summary(fake_data):
    import pandas as pd

    df = pd.DataFrame(ch11.FIG6.run(TINY, torch.device("cpu"), show_progress=False))
    gaps = ch11.merge_gaps(df)
    assert set(gaps.columns) >= {"init_scale", "lam", "seed", "merge", "data", "gap"}
    assert set(gaps["merge"]) == {"different", "same"}
    assert len(gaps) == 2 * 2 * 2  # λ values × merges × evaluation sets


def test_spec_scales():
    assert ch11.FIG6.spec("full")["widths"] == [1000, 100]
    assert ch11.FIG6.spec("full")["eta"] == 0.1
    with pytest.raises(ValueError, match="scale"):
        ch11.FIG6.spec("medium")


def test_init_scale_runs_are_fig6_init_variants(fake_data):
    import pandas as pd

    base = {**TINY, "init_scales": [3.0]}
    runs = {"short": {"steps": 2}, "long": {"steps": 4, "n_train": 5}}
    out = ch11.init_scale_runs(runs, base=base)
    assert list(out.run.unique()) == ["short", "long"]
    assert set(out.init_scale) == {3.0}
    # each block is merge_gaps of the fig6-init run with that override, at its last step
    for name, overrides in runs.items():
        df = pd.DataFrame(ch11.FIG6_INIT.run({**base, **overrides}, torch.device("cpu"), False))
        want = ch11.merge_gaps(df)
        got = out[out.run == name].drop(columns="run").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want)
    short, long_ = (out[out.run == r].set_index(["lam", "merge", "data"]).gap for r in runs)
    assert not short.equals(long_)  # the overrides reach the run
    with pytest.raises(ValueError, match="variant"):
        ch11.init_scale_runs({}, base=base)


def test_data_files_names_and_sizes_without_the_folder(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"x" * 7)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"y" * 3)  # raw file, as the loader reads
    files = ch11.data_files(tmp_path)
    assert files == [("t10k-images-idx3-ubyte.gz", 7), ("t10k-labels-idx1-ubyte", 3)]
    assert not any(str(tmp_path) in name for name, _ in files)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="labels") as err:
        ch11.data_files(tmp_path)
    assert str(tmp_path) not in str(err.value)  # the message names no machine path either


def test_stable_rank_table_averages_individual_nets_and_drops_the_output_layer(fake_data):
    import pandas as pd

    df = pd.DataFrame(ch11.FIG6.run(TINY, torch.device("cpu"), show_progress=False))
    last = df[(df.step == df.step.max()) & (df.metric == "stable_rank")]
    tab = ch11.stable_rank_table(last)
    assert list(tab.index) == TINY["lams"]
    assert list(tab.columns) == [(m, k) for m in ("W_1", "W_2")
                                 for k in ("individual", "merged", "merged same")]
    for lam in TINY["lams"]:
        at = last[(last.lam == lam) & (last.layer == 1)]
        ind = at[at.net.isin(["task1", "task2", "same"])]
        assert tab.loc[lam, ("W_1", "individual")] == pytest.approx(ind.value.mean(), rel=1e-12)
        merged = last[(last.lam == lam) & (last.layer == 2) & (last.net == "merged_same")]
        assert tab.loc[lam, ("W_2", "merged same")] == pytest.approx(merged.value.mean())
    with pytest.raises(ValueError, match="one step"):
        ch11.stable_rank_table(df[df.metric == "stable_rank"])  # every step: refused
