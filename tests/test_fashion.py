"""The Fashion-MNIST two-task construction and the fig6 experiment (chapter 11)."""

from __future__ import annotations

import pytest
import torch

from lowrank import fashion
from lowrank.fast import gd
from lowrank.nets import init_mlp


def test_binary_labels_group_classes_by_hand():
    assert fashion.binary_labels(torch.tensor([0, 4, 5, 9])).tolist() == [-1.0, -1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="classes 0..9"):
        fashion.binary_labels(torch.tensor([3, 10]))


def test_image_features_scale_pool_and_unit_norm():
    img = torch.zeros(1, 2, 4, dtype=torch.uint8)
    img[0, :, :2] = 255  # left 2x2 block white, right block black
    # pixels /255 -> left block 1, pooled 2x2 -> [1, 0], unit norm -> [1, 0]
    assert fashion.image_features(img, pool=2).tolist() == [[1.0, 0.0]]
    flat = fashion.image_features(img)
    assert torch.allclose(flat.norm(dim=1), torch.ones(1, dtype=torch.float64))
    assert flat[0, 0].item() == pytest.approx(0.5)  # four pixels of 1 -> 1/sqrt(4)
    with pytest.raises(ValueError, match="pool"):
        fashion.image_features(img, pool=3)
    with pytest.raises(ValueError, match="entirely black"):
        fashion.image_features(torch.zeros(1, 2, 2))


def test_padding_makes_tasks_orthogonal_and_keeps_length():
    a, b = torch.rand(5, 7, dtype=torch.float64), torch.rand(6, 7, dtype=torch.float64)
    left, right = fashion.pad_task(a, "left"), fashion.pad_task(b, "right")
    assert left.shape == (5, 14) and right.shape == (6, 14)
    assert torch.count_nonzero(left @ right.T) == 0
    torch.testing.assert_close(left.norm(dim=1), a.norm(dim=1))
    with pytest.raises(ValueError, match="side"):
        fashion.pad_task(a, "top")


def test_split_indices_disjoint_and_seeded():
    idx = fashion.split_indices(50, 10, 7, seed=3)
    allidx = torch.cat(list(idx.values()))
    assert [len(v) for v in idx.values()] == [10, 10, 7, 7]
    assert len(set(allidx.tolist())) == 34
    again = fashion.split_indices(50, 10, 7, seed=3)
    assert all(torch.equal(idx[k], again[k]) for k in idx)
    with pytest.raises(ValueError, match="2·\\(n_train \\+ n_test\\)"):
        fashion.split_indices(50, 20, 6, seed=0)


def test_make_tasks_roles():
    feats = fashion.image_features(torch.randint(1, 255, (40, 4, 4)))
    labels = torch.arange(40) % 10
    tasks = fashion.make_tasks(feats, labels, n_train=8, n_test=5, seed=0)
    t1, t2, same = tasks["task1"], tasks["task2"], tasks["same"]
    assert torch.count_nonzero(t1.x_train @ t2.x_train.T) == 0
    assert torch.count_nonzero(t1.x_train @ t2.x_test.T) == 0
    # task 2 and "same" share pool B: same images, other side, inverted labels
    assert torch.equal(t2.x_train[:, 16:], same.x_train[:, :16])
    assert torch.equal(t2.y_train, -same.y_train)
    assert not torch.equal(t1.x_train, same.x_train)


def _seeded_images() -> torch.Tensor:
    return torch.rand(4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _off_task_block(x: torch.Tensor, lam: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    w0 = init_mlp([x.shape[1], 5, 3, 1], members=1, seed=1)
    y = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    w, _ = gd(w0, x.unsqueeze(0), y, lam, eta=0.1, steps=steps)
    return w[0][0, :, 4:], w0[0][0, :, 4:]


def test_off_task_weights_only_decay():
    """What chapter 11 checks: zero-padded inputs leave the other block to decay alone."""
    x = fashion.pad_task(_seeded_images(), "left")
    block, block0 = _off_task_block(x, lam=0.5, steps=20)
    torch.testing.assert_close(block, (1 - 0.05) ** 20 * block0, rtol=1e-12, atol=0)


def test_off_task_identity_fails_when_inputs_leak():
    x = fashion.pad_task(_seeded_images(), "left")
    x[:, 4:] = 0.5  # no longer orthogonal to the other task: gradients reach the block
    block, block0 = _off_task_block(x, lam=0.5, steps=20)
    err = (block - 0.95**20 * block0).norm() / block.norm()
    assert err > 1e-6


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
    feats = fashion.image_features(images)
    labels = torch.arange(30) % 10
    monkeypatch.setattr(fashion, "load_features", lambda pool, folder=None: (feats, labels))


def test_fig6_rows_and_exact_decay(fake_data):
    rows = fashion.FIG6.run(TINY, torch.device("cpu"), show_progress=False)
    import pandas as pd

    df = pd.DataFrame(rows)
    assert set(df.net) >= {"task1", "task2", "same", "merged", "merged_same"}
    assert sorted(df.step.unique()) == [0, 2, 4]
    ratio = df[df.metric == "inactive_ratio"]
    expected = (1 - 0.1 * ratio.lam) ** ratio.step
    assert ((ratio.value - expected).abs() < 1e-12).all()
    loss = df[(df.metric == "loss") & (df.split == "train")]
    assert loss.value.between(0, 10).all()
    again = pd.DataFrame(fashion.FIG6.run(TINY, torch.device("cpu"), show_progress=False))
    assert df.equals(again)  # seeded: the same numbers twice


def test_fig6_summary(fake_data):
    import pandas as pd

    df = pd.DataFrame(fashion.FIG6.run(TINY, torch.device("cpu"), show_progress=False))
    gaps = fashion.merge_gaps(df)
    assert set(gaps.columns) >= {"init_scale", "lam", "seed", "merge", "data", "gap"}
    assert set(gaps["merge"]) == {"different", "same"}
    assert len(gaps) == 2 * 2 * 2  # λ values × merges × evaluation sets


def test_spec_scales():
    assert fashion.FIG6.spec("full")["widths"] == [1000, 100]
    assert fashion.FIG6.spec("full")["eta"] == 0.1
    with pytest.raises(ValueError, match="scale"):
        fashion.FIG6.spec("medium")


def test_init_scale_runs_are_fig6_init_variants(fake_data):
    import pandas as pd

    base = {**TINY, "init_scales": [3.0]}
    runs = {"short": {"steps": 2}, "long": {"steps": 4, "n_train": 5}}
    out = fashion.init_scale_runs(runs, base=base)
    assert list(out.run.unique()) == ["short", "long"]
    assert set(out.init_scale) == {3.0}
    # each block is merge_gaps of the fig6-init run with that override, at its last step
    for name, overrides in runs.items():
        df = pd.DataFrame(fashion.FIG6_INIT.run({**base, **overrides}, torch.device("cpu"), False))
        want = fashion.merge_gaps(df)
        got = out[out.run == name].drop(columns="run").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want)
    short, long_ = (out[out.run == r].set_index(["lam", "merge", "data"]).gap for r in runs)
    assert not short.equals(long_)  # the overrides reach the run
    with pytest.raises(ValueError, match="variant"):
        fashion.init_scale_runs({}, base=base)
