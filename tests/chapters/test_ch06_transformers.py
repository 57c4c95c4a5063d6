"""Chapter 6: spectra of checkpoints by role, head balance, a block at a stationary point."""

from __future__ import annotations

import json
import math

import matplotlib
import pandas as pd
import pytest
import torch
from tiny_checkpoints import FF, LAYERS, D, write_checkpoints

from lowrank.chapters import ch06_transformers as ch06
from lowrank.core import attention
from lowrank.core.engine import DivergenceError
from lowrank.data import checkpoints as ckpts
from lowrank.data import synthetic


@pytest.fixture(scope="module")
def small():
    x, y = synthetic.signed_pair_task(n=24, tokens=4, d=6, seed=3)
    return x, y, attention.readout_vector(6), attention.init_block(heads=2, d_head=2, d=6, seed=4)


def _fro(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.double()))


def _spec(w: torch.Tensor) -> float:
    return float(torch.linalg.svdvals(w.double())[0])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (folder, expected role matrices), each from its transformers config."""
    return write_checkpoints(tmp_path_factory)


FAMILY_OF = {"bert": "bert", "roberta": "bert", "gpt2": "gpt2", "phi": "phi",
             "phi-mixer": "phi-mixer", "gptj": "gptj"}


def test_stacked_layout_is_spectra_layout(small):
    *_, p = small
    q, k, v, o = attention.stacked(p)
    assert q.shape == (4, 6) and o.shape == (6, 4)
    torch.testing.assert_close(q[2:4], p["Q"][1])
    torch.testing.assert_close(o[:, 2:4], p["O"][1])
    direct = ch06.layer_head_balance(q, k, v, o, 2)
    got = ch06.block_head_balance(p)
    for key, val in direct.items():
        torch.testing.assert_close(got[key], val)


def test_gd_reaches_a_balanced_stationary_point_and_the_check_fails_off_it(small):
    x, y, u, p0 = small
    fit = ch06.train_block(p0, x, y, u, lam=0.01, eta=2.0, max_steps=20_000, tol=1e-10)
    assert fit.residual < 1e-10 and fit.steps < 20_000
    assert all(float(fit.params[r].norm(dim=(1, 2)).min()) > 0.1 for r in attention.BLOCK_ROLES)
    bound = ch06.balance_bound(fit.params, fit.residual)
    assert ch06.balance_residual(fit.params) <= float(bound.max()) + 1e-12
    assert float(bound.max()) < 1e-6
    # the check fails on an unbalanced block: a rescaled head (same f, same L), the
    # initialisation, and the block trained without weight decay
    bad = ch06.rescale_values(fit.params, head=1, c=3.0)
    loss_bad, grad_bad = attention.block_loss_and_grad(bad, x, y, u)
    assert math.isclose(loss_bad, fit.loss, rel_tol=1e-12)
    assert ch06.balance_residual(bad) > 0.5
    assert ch06.block_alignment_residual(bad, grad_bad, 0.01) > 0.1
    assert ch06.balance_residual(p0) > 0.1
    free = ch06.train_block(p0, x, y, u, lam=0.0, eta=2.0, max_steps=fit.steps)
    assert math.isnan(free.residual) and free.steps == fit.steps
    assert ch06.balance_residual(free.params) > 0.1
    # the d x d Grams V_hᵀV_h and O_hO_hᵀ are not the identity that holds
    assert float(ch06.block_head_balance(fit.params)["vo_gram_wrong_orientation"].min()) > 0.1


def test_rescaled_head_residual_is_known_exactly(small):
    *_, p = small
    q, k, v, o = (p[r].clone() for r in attention.BLOCK_ROLES)
    v[0] = o[0].T.clone()  # V_0 = O_0ᵀ: V_0V_0ᵀ = O_0ᵀO_0 exactly
    k[0] = q[0].clone()
    bal = {"Q": q, "K": k, "V": v, "O": o}
    assert float(ch06.block_head_balance(bal)["vo_gram_residual"][0]) < 1e-15
    # V → 2V, O → O/2: V Vᵀ grows by 4, OᵀO shrinks by 4, residual |4 − 1/4|/4
    bad = ch06.rescale_values(bal, head=0, c=2.0)
    res = ch06.block_head_balance(bad)["vo_gram_residual"][0]
    assert math.isclose(float(res), (4 - 0.25) / 4, rel_tol=1e-12)


def test_refusals(small):
    x, y, u, p = small
    with pytest.raises(ValueError, match="exactly"):
        attention.stacked({"Q": p["Q"]})
    with pytest.raises(ValueError, match="lam"):
        ch06.train_block(p, x, y, u, lam=-1.0, eta=1.0, max_steps=1)
    with pytest.raises(ValueError, match="θ = 0"):
        zero = {r: torch.zeros_like(p[r]) for r in attention.BLOCK_ROLES}
        ch06.block_alignment_residual(zero, zero, 0.1)
    with pytest.raises(DivergenceError, match="diverged"):
        ch06.train_block(p, x, y, u, lam=0.0, eta=1e200, max_steps=5)
    bad = {**p, "O": p["O"][:, :-1]}
    with pytest.raises(ValueError, match="O must be"):
        attention.stacked(bad)


@pytest.mark.parametrize("family", list(FAMILY_OF))
def test_roles_and_values_match_direct_computation(checkpoints, family):
    folder, expected = checkpoints[family]
    rows = ch06.analyse(folder, method="exact", device="cpu")
    assert {r["family"] for r in rows} == {FAMILY_OF[family]}
    assert len(rows) == LAYERS * len(ckpts.ROLES)
    for r in rows:
        w = expected[(r["layer"], r["role"])]
        assert (r["rows"], r["cols"]) == tuple(w.shape)
        assert r["fro"] == pytest.approx(_fro(w), rel=1e-10)
        assert r["spectral"] == pytest.approx(_spec(w), rel=1e-10)
        assert r["stable_rank"] == pytest.approx(_fro(w) / _spec(w), rel=1e-10)
        assert r["stable_rank_sq"] == pytest.approx(r["stable_rank"] ** 2, rel=1e-12)
    with ckpts.Checkpoint(folder) as ckpt:  # the matrices themselves, not only their norms
        for layer, mats in ckpt.iter_layers():
            for role, w in mats.items():
                torch.testing.assert_close(w, expected[(layer, role)].double())


@pytest.mark.parametrize("family", list(FAMILY_OF))
def test_architecture_table_from_headers(checkpoints, family):
    folder, _ = checkpoints[family]
    ff = 4 * D if family in ("gpt2", "gptj") else FF
    arch = ch06.architecture(folder)
    assert (arch["layers"], arch["d_model"], arch["d_ff"]) == (LAYERS, D, ff)


def test_sharded_and_half_precision_checkpoint(checkpoints, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder, expected = checkpoints["gptj"]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        sd = {k: f.get_tensor(k).to(torch.bfloat16) for k in f.keys()}
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(tmp_path / fname))
        weight_map.update({k: fname for k in keys})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "stray.safetensors").write_text("not listed in the index, never opened")
    rows = ch06.analyse(tmp_path, device="cpu")
    for r in rows:
        w = expected[(r["layer"], r["role"])].to(torch.bfloat16)
        assert r["fro"] == pytest.approx(_fro(w), rel=1e-10)


def test_hf_cache_resolution_offline(checkpoints, tmp_path, monkeypatch):
    folder, _ = checkpoints["bert"]
    repo = tmp_path / "models--someone--tiny-bert"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123\n")
    for f in folder.iterdir():
        (snap / f.name).symlink_to(f)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert ckpts.resolve_checkpoint("someone/tiny-bert") == snap
    assert ch06.architecture("someone/tiny-bert")["layers"] == LAYERS
    with pytest.raises(ValueError, match="never downloads"):
        ckpts.resolve_checkpoint("someone/not-cached")


def test_known_stable_rank_by_hand():
    # diag(3, 4): ‖W‖_F = 5, ‖W‖_2 = 4, stable rank 5/4, squared 25/16.
    w = torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64))
    (row,) = ch06.layer_rows({"X": w})
    assert (row["fro"], row["spectral"]) == pytest.approx((5.0, 4.0), rel=1e-14)
    assert row["stable_rank"] == pytest.approx(1.25, rel=1e-14)
    assert row["stable_rank_sq"] == pytest.approx(1.5625, rel=1e-14)
    with pytest.raises(ValueError, match="zero matrix"):
        ch06.layer_rows({"Z": torch.zeros(2, 3)})


def test_head_balance_on_balanced_and_unbalanced_heads():
    gen = torch.Generator().manual_seed(1)
    heads, dh, d = 3, 4, 10
    q = torch.randn(heads * dh, d, generator=gen, dtype=torch.float64)
    rot = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64)).Q
    k = q @ rot  # K_h = Q_h R with R orthogonal, so K_hK_hᵀ = Q_hQ_hᵀ
    v = torch.randn(heads * dh, d, generator=gen, dtype=torch.float64)
    o = v.T.clone()  # O_h = V_hᵀ, so O_hᵀO_h = V_hV_hᵀ
    bal = ch06.layer_head_balance(q, k, v, o, heads)
    for key in ("qk_ratio", "vo_ratio"):
        torch.testing.assert_close(bal[key], torch.ones(heads, dtype=torch.float64))
    for key in ("qk_gram_residual", "vo_gram_residual"):
        assert float(bal[key].max()) < 1e-12
    # K scaled by 2: ratio 1/2 and Gram residual |1 - 4| = 3, exactly
    bad = ch06.layer_head_balance(q, 2 * k, v, o, heads)
    torch.testing.assert_close(bad["qk_ratio"], torch.full((heads,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(bad["qk_gram_residual"], torch.full((heads,), 3.0,
                                                                    dtype=torch.float64))
    # heads of O in the wrong order: the V/O balance breaks
    swapped = torch.cat([o[:, dh:], o[:, :dh]], dim=1)
    assert float(ch06.layer_head_balance(q, k, v, swapped, heads)["vo_gram_residual"].min()) > 0.1
    with pytest.raises(ValueError, match="q and k"):
        ch06.layer_head_balance(q, k[:-1], v, o, heads)


def test_packaged_minilm_table1_row():
    arch = ch06.architecture("minilm")
    assert (arch["family"], arch["layers"], arch["d_model"], arch["d_ff"]) == ("bert", 6, 384, 1536)
    assert ckpts.attention_heads(ckpts.checkpoint_config("minilm")) == 12


def test_gaussian_stable_rank_is_metrics_stable_rank_and_checks_sizes():
    from lowrank.core.metrics import stable_rank

    g = torch.randn(30, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert ch06.gaussian_stable_rank(30, 20, seed=3) == float(stable_rank(g))
    with pytest.raises(ValueError, match="rows must be > 0"):
        ch06.gaussian_stable_rank(0, 20)


@pytest.mark.parametrize("heads", [0, -2, 1.5])
def test_head_balance_refuses_a_bad_head_count(heads):
    q = torch.ones(4, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="heads must be a positive integer"):
        ch06.layer_head_balance(q, q, q, q.T.clone(), heads)


def test_init_baseline_has_the_shapes_norms_and_is_seeded():
    fro, bal = ch06.init_baseline("minilm", std=0.02, seed=0)
    assert len(fro) == 6 * len(ckpts.ROLES) and len(bal) == 6 * 12
    for row in fro:  # ‖W‖_F ≈ std √(rows cols) for N(0, std²) entries
        assert abs(row["fro"] / (0.02 * (row["rows"] * row["cols"]) ** 0.5) - 1) < 0.01
    by = {(r["layer"], r["role"]): r["fro"] for r in fro}
    qkv = (by[(0, "Q")] ** 2 + by[(0, "K")] ** 2 + by[(0, "V")] ** 2) ** 0.5
    assert abs(by[(0, "QKV")] - qkv) < 1e-9  # QKV is the concatenation of the same draws
    # independent draws: Gram residual near sqrt(2 d_h / d), far from the balanced 0
    mean_vo = sum(r["vo_gram_residual"] for r in bal) / len(bal)
    assert abs(mean_vo / (2 * 32 / 384) ** 0.5 - 1) < 0.1
    assert ch06.init_baseline("minilm", std=0.02, seed=0)[0] == fro
    assert ch06.init_baseline("minilm", std=0.02, seed=1)[0] != fro
    with pytest.raises(ValueError, match="std"):
        ch06.init_baseline("minilm", std=0.0)


def test_head_balance_refuses_a_zero_head():
    import pytest
    import torch

    from lowrank.chapters.ch06_transformers import layer_head_balance

    q = torch.randn(4, 3, dtype=torch.float64)
    k, v, o = q.clone(), q.clone(), q.T.clone()
    k[:2] = 0
    with pytest.raises(ValueError, match="q and k must have no all-zero head"):
        layer_head_balance(q, k, v, o, heads=2)


def _spectra_frame(roles, layers=3):
    rows = []
    for layer in range(layers):
        for i, role in enumerate(roles):
            rows.append({"layer": layer, "role": role, "stable_rank": 2.0 + i + 0.1 * layer,
                         "fro": 10.0 + i - 0.5 * layer})
    return pd.DataFrame(rows)


def _drawn_roles(fig):
    legend = fig.legends[0]
    return [t.get_text() for t in legend.get_texts()]


def test_spectra_figure_draws_the_gate_where_a_checkpoint_has_it():
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gated = _spectra_frame(["G", "Q", "K", "V", "O", "QKV", "M1", "M2"])  # G first on purpose
    fig = ch06.transformer_spectra(gated, "gated", baseline={"G": 5.0, "Q": 4.0})
    assert ch06.spectra_roles(gated) == list(ckpts.ALL_ROLES)
    assert _drawn_roles(fig) == list(ckpts.ALL_ROLES)
    g_value = gated[gated.role == "G"].sort_values("layer").stable_rank.to_numpy()
    drawn = [line.get_ydata() for line in fig.axes[0].lines if len(line.get_ydata()) == 3]
    assert any(list(y) == list(g_value) for y in drawn)  # the G curve itself is drawn
    assert sum(list(line.get_ydata()) == [5.0, 5.0] for line in fig.axes[0].lines) == 1
    plt.close(fig)
    plain = _spectra_frame(list(ckpts.ROLES))  # MiniLM-like: no gate, no G in the legend
    fig = ch06.transformer_spectra(plain)
    assert _drawn_roles(fig) == list(ckpts.ROLES) and "G" not in ch06.spectra_roles(plain)
    plt.close(fig)


def test_head_balance_refuses_grouped_query_attention_by_name():
    import torch

    from lowrank.chapters import ch06_transformers as ch06

    q, k = torch.randn(8, 8), torch.randn(4, 8)  # 4 Q heads of 2, 2 K heads: GQA
    v, o = torch.randn(4, 8), torch.randn(8, 4)
    with pytest.raises(ValueError, match="grouped-query attention"):
        ch06.layer_head_balance(q, k, v, o, heads=4)
