"""Chapter 13: task arithmetic on fine-tuned all-MiniLM-L6-v2 against Lemma 4's mechanism.

``ta-minilm`` fine-tunes MiniLM with a linear head on two template text tasks A and B
(vocabulary overlap ρ) from the same θ₀, by (a) anchored GD and (b) AdamW, and merges
the task vectors: θ₀ + τ_A + τ_B (mergekit ``task_arithmetic``, weight 1),
θ₀ + (τ_A + τ_B)/2 (mergekit ``linear``) and TIES (mergekit ``ties``). The tidy table
holds losses and accuracies, stable ranks of τ by role, input overlaps per layer and
Lemma 4's leak bound in the first fine-tuned linear maps.
"""

from __future__ import annotations

from typing import Any

import torch

from lowrank.chapters.ch13_task_arithmetic_bert import encode, load_minilm
from lowrank.chapters.ch13_task_arithmetic_train import (
    GradientTap,
    Trainable,
    adamw,
    anchored_gd,
)
from lowrank.core.merge import merge_ties
from lowrank.core.metrics import stable_rank
from lowrank.core.precision import training_dtype
from lowrank.data import text_tasks
from lowrank.data.checkpoints import minilm_checkpoint
from lowrank.runner.experiment import Experiment

MERGES = {"task_arithmetic": "θ₀ + τ_A + τ_B", "linear": "θ₀ + (τ_A + τ_B)/2",
          "ties": "TIES (density 0.2)"}  # fmt: skip


def merged_taus(tau_a: list[torch.Tensor], tau_b: list[torch.Tensor], base: list[torch.Tensor],
                method: str, density: float = 0.2) -> list[torch.Tensor]:
    """The merged task vector of one pair: sum, mean, or TIES (lowrank.core.merge)."""
    if method == "task_arithmetic":
        return [a + b for a, b in zip(tau_a, tau_b, strict=True)]
    if method == "linear":
        return [(a + b) / 2 for a, b in zip(tau_a, tau_b, strict=True)]
    if method == "ties":
        nets = [[b0 + t for b0, t in zip(base, tau, strict=True)] for tau in (tau_a, tau_b)]
        return [m - b0 for m, b0 in zip(merge_ties(base, nets, density), base, strict=True)]
    raise ValueError(f"method must be one of {list(MERGES)}, got {method!r}")


def abs_cos(xa: torch.Tensor, xb: torch.Tensor) -> tuple[float, float]:
    """Largest and mean |cos| between every row of ``xa`` and every row of ``xb``."""
    a = xa.reshape(-1, xa.shape[-1])
    b = xb.reshape(-1, xb.shape[-1])
    c = (a / a.norm(dim=-1, keepdim=True)) @ (b / b.norm(dim=-1, keepdim=True)).T
    return float(c.abs().max()), float(c.abs().mean())


def leak_bound_violation(leak: torch.Tensor, bound: torch.Tensor, rtol: float) -> float:
    """max over x' of ‖τ x'‖ − (1 + rtol)·bound(x'): ≤ 0 when the bound holds (Lemma 4)."""
    if leak.shape != bound.shape:
        raise ValueError(f"leak and bound must match, got {tuple(leak.shape)}, "
                         f"{tuple(bound.shape)}")
    return float((leak - (1 + rtol) * bound).max())


class LeakMonitor:
    """Lemma 4's recursion for the B-members, on task-A inputs x' of the first fine-tuned layer.

    Per role r ∈ {Q, K, V}: b_{s+1}(x') = (1 − ηλ) b_s(x') + η‖∇_{W_r}L x'‖ (the proof's
    first inequality, Cauchy-Schwarz not yet used) and c_{s+1} = (1 − ηλ) c_s + η G_s with
    G_s = Σ_j ‖∂L/∂(W_r x_j)‖ over the member's own token inputs x_j, so that
    ‖τ_t x'‖ ≤ b_t(x') ≤ ε(x') c_t, ε(x') = max_j |⟨x_j, x'⟩| (Appendix C.1 with τ_0 = 0).
    """

    def __init__(self, index: dict[str, int], members: list[int], x_other: torch.Tensor,
                 x_own: torch.Tensor, lams: list[float], eta: float, tap: GradientTap):
        self.index, self.members, self.eta, self.tap = index, members, eta, tap
        self.x_other = x_other.reshape(-1, x_other.shape[-1])  # (N_A, d)
        self.decay = torch.tensor([1 - eta * lams[e] for e in members], dtype=x_own.dtype)
        own = x_own[members].reshape(len(members), -1, x_own.shape[-1])  # (M, N_B, d)
        self.eps = (own @ self.x_other.T).abs().amax(dim=1)  # (M, N_A)
        n_other, dt = self.x_other.shape[0], x_own.dtype
        self.b = {r: torch.zeros(len(members), n_other, dtype=dt) for r in index}
        self.c = {r: torch.zeros(len(members), dtype=dt) for r in index}
        self.g_max = {r: 0.0 for r in index}

    def __call__(self, step: int, taus, grads) -> None:
        for r, k in self.index.items():
            g = grads[k][self.members].detach()  # (M, out, in)
            self.b[r] = self.decay[:, None] * self.b[r] + self.eta * (
                g @ self.x_other.T).norm(dim=1)
            gs = self.tap.grads[r][self.members].norm(dim=-1).flatten(1).sum(dim=1)
            self.c[r] = self.decay * self.c[r] + self.eta * gs
            self.g_max[r] = max(self.g_max[r], float(gs.max()))

    def rows(self, taus: list[torch.Tensor], words: torch.Tensor) -> list[dict[str, Any]]:
        """Per member and role: leak, both bounds, the worst ratios of leak to bound; the
        ``_words`` columns restrict x' to word tokens (``words``: mask over task-A tokens)."""
        out = []
        for r, k in self.index.items():
            tau = taus[k][self.members]
            leak = (tau @ self.x_other.T).norm(dim=1)  # (M, N_A)
            lemma = self.eps * self.c[r][:, None]
            for i, e in enumerate(self.members):
                out.append({
                    "member": e, "role": r, "leak_max": float(leak[i].max()),
                    "leak_mean": float(leak[i].mean()), "eps_max": float(self.eps[i].max()),
                    "leak_mean_words": float(leak[i][words].mean()),
                    "leak_common": float((tau[i] @ self.x_other[words].mean(dim=0)).norm()
                                         / leak[i][words].mean()),
                    "eps_max_words": float(self.eps[i][words].max()),
                    "ratio_lemma_words": float((leak[i][words] / lemma[i][words]).max()),
                    "G_max": self.g_max[r], "c_t": float(self.c[r][i]),
                    "viol_recursion": leak_bound_violation(leak[i], self.b[r][i], 1e-4),
                    "viol_lemma": leak_bound_violation(self.b[r][i], lemma[i], 1e-4),
                    "ratio_recursion": float((leak[i] / self.b[r][i]).max()),
                    "ratio_lemma": float((leak[i] / lemma[i]).max()),
                })  # fmt: skip
        return out


def _tasks(spec: dict[str, Any], vocab: dict[str, int]):
    """Task A and one task B per ρ, with tokenised train and test sentences."""
    out = {}
    for rho in spec["rhos"]:
        a, b = text_tasks.task_pair(vocab, spec["words"], rho, spec["seed"])
        out.setdefault("A", a)
        out[f"B{rho:g}"] = b
    data = {}
    for i, (name, task) in enumerate(out.items()):
        s, y = task.sample(spec["n"], spec["k"], seed=100 * spec["seed"] + 2 * i)
        st, yt = task.sample(spec["n_test"], spec["k"], seed=100 * spec["seed"] + 2 * i + 1)
        data[name] = (text_tasks.tokenise(s, vocab), y, text_tasks.tokenise(st, vocab), yt)
    return out, data


def members(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """(optimiser, λ, task) of every fine-tuned copy: a λ sweep at ρ₀, a ρ sweep at λ_main."""
    rho0 = f"B{spec['rhos'][0]:g}"
    out = []
    for opt, lams, main in (("gd", spec["lams"], spec["lam_main"]),
                            ("adamw", spec["adam_lams"], spec["adam_lam_main"])):
        for lam in lams:
            out += [{"opt": opt, "lam": lam, "task": "A"}, {"opt": opt, "lam": lam, "task": rho0}]
        if opt == "gd" or spec["adam_rho_sweep"]:
            out += [{"opt": opt, "lam": main, "task": f"B{r:g}"} for r in spec["rhos"][1:]]
    return out


def _evaluate(trainable, base, tau, inputs, labels) -> tuple[torch.Tensor, torch.Tensor]:
    thetas = [(b0 + t).unsqueeze(0) for b0, t in zip(base, tau, strict=True)]
    with torch.no_grad():
        f = trainable.logits(thetas, inputs.unsqueeze(0))[0]
    margins = labels * f
    return torch.nn.functional.softplus(-margins).mean(), (margins > 0).double().mean()


def run_ta(spec: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """Fine-tune every member, merge each (A, B) pair, measure; tidy rows (see module doc)."""
    dtype = training_dtype(device)
    model = load_minilm(dtype)
    model["weights"] = {k: v.to(device) for k, v in model["weights"].items()}
    vocab = text_tasks.load_vocab(minilm_checkpoint() / "vocab.txt")
    tasks, data = _tasks(spec, vocab)
    first = spec["first_layer"]
    tr = Trainable(model, tuple(range(first, model["config"]["num_hidden_layers"])))
    sites: dict[str, dict] = {}

    def keep(name):
        return lambda layer, site, t: sites[name].__setitem__((layer, site), t.detach())

    with torch.no_grad():
        xin = {}
        for name, (tok, *_rest) in data.items():
            sites[name] = {}
            encode(tok.to(device), model, hook=keep(name))
            xin[name] = sites[name][(first, "in")]
            xin[name + "_test"] = encode(data[name][2].to(device), model, range(first))
    mem = members(spec)
    rows: list[dict[str, Any]] = []
    taus: dict[int, list[torch.Tensor]] = {}
    for opt in ("gd", "adamw"):
        idx = [i for i, m in enumerate(mem) if m["opt"] == opt]
        x = torch.stack([xin[mem[i]["task"]] for i in idx])
        y = torch.stack([data[mem[i]["task"]][1] for i in idx]).to(device, dtype)
        lams = [mem[i]["lam"] for i in idx]
        if opt == "gd":
            tap = GradientTap(first)
            roles = {r: tr.names.index((first, r)) for r in ("Q", "K", "V")}
            bs = [j for j, i in enumerate(idx) if mem[i]["task"] != "A"]
            mon = LeakMonitor(roles, bs, xin["A"], x, lams, spec["eta"], tap)
            out = anchored_gd(tr, x, y, lams, spec["eta"], spec["steps"], mon, tap)
            n_tok = xin["A"].shape[-2]
            words = (torch.arange(xin["A"].shape[0] * n_tok) % n_tok > 0) & (
                torch.arange(xin["A"].shape[0] * n_tok) % n_tok < n_tok - 1)
            xa = xin["A"].reshape(-1, xin["A"].shape[-1])
            for row in mon.rows(out, words):
                e = row.pop("member")
                a = next(j for j, i in enumerate(idx) if mem[i]["task"] == "A"
                         and mem[i]["lam"] == lams[e])
                signal = (out[roles[row["role"]]][a] @ xa.T).norm(dim=0)
                rows.append({**mem[idx[e]], "metric": "leak", **row,
                             "signal_mean": float(signal.mean()),
                             "signal_mean_words": float(signal[words].mean())})
        else:
            out = adamw(tr, x, y, lams, spec["adam_lr"], spec["steps"])
        for j, i in enumerate(idx):
            taus[i] = [t[j] for t in out]
    base = tr.theta0()
    for i, m in enumerate(mem):  # stable ranks of τ by role (chapter 6's roles)
        for (layer, role), t in zip(tr.names[:-2], taus[i][:-2], strict=True):
            rows.append({**m, "metric": "stable_rank", "layer": layer + 1, "role": role,
                         "value": float(stable_rank(t)), "fro": float(t.norm())})
    for i, m in enumerate(mem):
        if m["task"] == "A":
            continue
        j = next(k for k, a in enumerate(mem) if a["task"] == "A" and a["opt"] == m["opt"]
                 and a["lam"] == m["lam"])
        pair = {"opt": m["opt"], "lam": m["lam"], "rho": float(m["task"][1:])}
        models = {"individual A": taus[j], "individual B": taus[i]}
        models |= {k: merged_taus(taus[j], taus[i], base, k) for k in MERGES}
        for mname, tau in models.items():
            for task, key in (("A", "A"), ("B", m["task"])):
                if mname.startswith("individual") and not mname.endswith(task):
                    continue
                for split, xs, ys in (("train", xin[key], data[key][1]),
                                      ("test", xin[key + "_test"], data[key][3])):
                    loss, acc = _evaluate(tr, base, tau, xs, ys.to(device, dtype))
                    model_name = "individual" if mname.startswith("individual") else mname
                    rows.append({**pair, "metric": "eval", "model": model_name, "task": task,
                                 "split": split, "loss": float(loss), "acc": float(acc)})
        rows += _span_rows(tr, pair, xin[m["task"]], taus[i], first)
        xa = xin["A"][:, 1:-1].reshape(-1, xin["A"].shape[-1])  # task-A word tokens
        for role in ("Q", "K", "V"):
            k = tr.names.index((first, role))
            leak, signal = ((taus[q][k] @ xa.T).norm(dim=0).mean() for q in (i, j))
            rows.append({**pair, "metric": "leak_ratio", "role": role,
                         "value": float(leak / signal)})
        rows += _overlap_rows(tr, model, sites, pair, key=m["task"], taus=(taus[j], taus[i]),
                              base=base, xin=xin)
    return tidy(rows)


def tidy(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with the same keys (the union, in order of appearance; None where absent)."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return [{k: row.get(k) for k in keys} for row in rows]


def span_residual(tau: torch.Tensor, x: torch.Tensor) -> float:
    """‖τ(I − P)‖_F / ‖τ‖_F, P the projector on the span of the rows of ``x`` (Lemma 4's
    premise: GD puts the rows of τ in the span of the training inputs, so this is 0)."""
    u, sv, _ = torch.linalg.svd(x.reshape(-1, x.shape[-1]).T.double(), full_matrices=False)
    basis = u[:, sv > sv[0] * 1e-6]
    t = tau.double()
    return float((t - (t @ basis) @ basis.T).norm() / t.norm())


def _span_rows(tr, pair, x_own, tau, first) -> list[dict[str, Any]]:
    rows = []
    for role in ("Q", "K", "V"):
        t = tau[tr.names.index((first, role))]
        rows.append({**pair, "metric": "span_residual", "role": role,
                     "value": span_residual(t, x_own)})
    return rows


def _overlap_rows(tr, model, sites, pair, key, taus, base, xin) -> list[dict[str, Any]]:
    """Largest and mean |cos| of A's and B's token inputs to every layer, at θ₀ and tuned."""
    rows = []
    for (layer, site), xa in sites["A"].items():
        if site not in ("in", "ffn_in"):
            continue
        rows.append(_overlap_row(pair, layer, site, "θ₀", xa, sites[key][(layer, site)]))
    tuned: dict[str, dict] = {"A": {}, key: {}}
    for name, tau in (("A", taus[0]), (key, taus[1])):
        thetas = [(b0 + t).unsqueeze(0) for b0, t in zip(base, tau, strict=True)]
        with torch.no_grad():
            tr.logits(thetas, xin[name].unsqueeze(0),
                      lambda layer, site, t, _n=name: tuned[_n].__setitem__((layer, site), t[0]))
    for (layer, site), xa in tuned["A"].items():
        if site not in ("in", "ffn_in"):
            continue
        rows.append(_overlap_row(pair, layer, site, "fine-tuned", xa, tuned[key][(layer, site)]))
    return rows


def _overlap_row(pair, layer, site, when, xa, xb) -> dict[str, Any]:
    """|cos| over all tokens and over word tokens only ([CLS] and [SEP] left out)."""
    cmax, cmean = abs_cos(xa, xb)
    wmax, wmean = abs_cos(xa[:, 1:-1], xb[:, 1:-1])
    return {**pair, "metric": "overlap", "layer": layer + 1, "site": site, "when": when,
            "cos_max": cmax, "cos_mean": cmean, "cos_max_words": wmax, "cos_mean_words": wmean}


def _spec(**kw: Any) -> dict[str, Any]:
    return {"seed": 0, "words": 16, "k": 3, "n": 24, "n_test": 96, "rhos": [0.0, 0.5, 1.0],
            "first_layer": 5, "eta": 0.3, "steps": 50, "lams": [0.0, 0.1],
            "lam_main": 0.1, "adam_lr": 5e-4, "adam_lams": [0.0, 1.0],
            "adam_lam_main": 1.0, "adam_rho_sweep": False, **kw}  # fmt: skip


class TaskArithmeticMiniLM(Experiment):
    """``ta-minilm``: task arithmetic on fine-tuned MiniLM vs Lemma 4's first-layer leak."""

    name = "ta-minilm"
    description = ("Chapter 13: fine-tune all-MiniLM-L6-v2 on two template text tasks "
                   "(anchored GD and AdamW), merge task vectors, Lemma 4's leak")
    full_cost = "14 copies of MiniLM, all 6 layers, 1000 steps"

    def quick(self) -> dict[str, Any]:
        """The top layer and the head, 24 sentences of 3 words per task, 50 steps."""
        return _spec()

    def full(self) -> dict[str, Any]:
        """All six layers and the head, 512 sentences of 6 words, 1000 steps, more λ and ρ."""
        return _spec(words=64, k=6, n=512, n_test=512, rhos=[0.0, 0.25, 0.5, 0.75, 1.0],
                     first_layer=0, steps=1000, eta=0.5, lams=[0.0, 0.003, 0.03],
                     lam_main=0.03, adam_lr=1e-4, adam_lams=[0.0, 0.01, 1.0],
                     adam_rho_sweep=True)

    def workloads(self, spec: dict[str, Any]) -> list:
        """The FLOP model: every copy a chain of its fine-tuned layers' matrices (Q, K, V, O,
        M1, M2: 12 d² per layer, d = 384) and the head, on each token of its n sentences."""
        from lowrank.runner.cost import Workload

        dims = (384, *(2304, 384) * (6 - spec["first_layer"]), 1)
        return [Workload(dims, spec["n"] * (spec["k"] + 2), len(members(spec)), spec["steps"])]

    def smoke(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The full model shapes (all layers, the full vocabulary and sentence length) for 2
        steps, with 6 members and 4 sentences per task, so a CPU runs it in seconds."""
        return {**spec, "steps": 2, "lams": [0.0, spec["lam_main"]], "rhos": [0.0],
                "adam_lams": [0.0], "adam_lam_main": 0.0, "adam_rho_sweep": False,
                "n": 4, "n_test": 4}

    def run(
        self, spec: dict[str, Any], device: torch.device, show_progress: bool = False
    ) -> list[dict[str, Any]]:
        """Fine-tune, merge and measure (see :func:`run_ta`)."""
        return run_ta(spec, device)


TA_MINILM = TaskArithmeticMiniLM()
