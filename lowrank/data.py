"""Synthetic tasks of the paper: inputs on the unit sphere, sin labelling, orthogonal tasks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowrank.checks import check_finite, check_positive


@dataclass
class Task:
    """Inputs x (n, d) and labels y ∈ {−1, +1} (n,) of one binary task."""

    x: torch.Tensor
    y: torch.Tensor


def unit_sphere(n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """n inputs drawn from N(0, I_d) and projected onto the sphere S^{d−1} (Section 5)."""
    check_positive(n, "n")
    check_positive(d, "d")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return (x / x.norm(dim=1, keepdim=True)).to(dtype)


def sin_labels(x: torch.Tensor, w: torch.Tensor, a: float = 1.0) -> torch.Tensor:
    """y = 2·1(1/(1+e^{−f*(x)}) ≥ 1/2) − 1 with f*(x) = sin(a wᵀx) (Figure 2), i.e. sign, 0 ↦ +1."""
    check_finite(x, "x")
    check_finite(w, "w")
    if not math.isfinite(a):
        raise ValueError(f"a (the frequency of sin(a wᵀx)) must be finite, got {a}")
    if w.ndim != 1 or x.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"w must have shape ({x.shape[-1]},), got {tuple(w.shape)}")
    f_star = torch.sin(a * (x @ w))
    return torch.where(f_star >= 0, 1.0, -1.0).to(x.dtype)


def sin_task(n: int, d: int, a: float = 1.0, seed: int = 0, dtype=torch.float64) -> Task:
    """A task with inputs on the sphere and labels sign(sin(a wᵀx)), w ~ N(0, I_d)."""
    # drawn and labelled in float64 like every other task here, then cast: one seed gives
    # the same task in every dtype (float32 draws differ from float64 ones)
    x = unit_sphere(n, d, seed=seed)
    w = torch.randn(d, generator=torch.Generator().manual_seed(seed + 10_007), dtype=torch.float64)
    return Task(x.to(dtype), sin_labels(x, w, a).to(dtype))


def orthogonal_tasks(
    n: int, d: int, a: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[Task, Task]:
    """Two tasks on orthogonal subspaces: x ~ N(0, Σ_i) normalised, ⟨Σ_1, Σ_2⟩ = 0 (Section 5).

    A seeded random orthonormal basis is split in two halves Q_1, Q_2 and
    Σ_i = Q_i Q_iᵀ; each task has its own labelling vector w_i ~ N(0, I_d).
    """
    check_positive(n, "n")
    if d < 2:
        raise ValueError(f"d must be >= 2 to split into two subspaces, got {d}")
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    tasks = []
    for basis in (q[:, : d // 2], q[:, d // 2 :]):
        z = torch.randn(n, basis.shape[1], generator=gen, dtype=torch.float64)
        x = z @ basis.T
        x = x / x.norm(dim=1, keepdim=True)
        w = torch.randn(d, generator=gen, dtype=torch.float64)
        tasks.append(Task(x.to(dtype), sin_labels(x, w, a).to(dtype)))
    return tasks[0], tasks[1]


# --- IDX files (Fashion-MNIST, Xiao et al. 2017) -------------------------------------

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FASHION_FILES = {
    "images": "{split}-images-idx3-ubyte",
    "labels": "{split}-labels-idx1-ubyte",
}
FASHION_SPLITS = ("train", "t10k")


def read_idx(path):
    """An IDX file (raw or gzip) as a numpy array of the shape its header declares.

    The header is two zero bytes, a dtype code, the number of dimensions and one
    big-endian uint32 per dimension; the file must hold exactly as many data bytes
    as those dimensions say, so a truncated or padded file is refused.
    """
    import gzip
    from pathlib import Path

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path must be an existing IDX file, got {str(path)!r}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip stream ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file (magic number must start with two zero bytes, "
            f"got {raw[:4].hex() or 'an empty file'})"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02X} (expected one of {known})")
    if ndim < 1:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions, expected at least 1")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, expected {header})")
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    held = len(raw) - header
    if held != expected:
        what = "truncated" if held < expected else "longer than its header says"
        raise ValueError(
            f"{path}: file is {what}: header declares dims {dims} ({expected} data bytes) "
            f"but the file holds {held} data bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _fashion_file(folder, split: str, kind: str):
    from pathlib import Path

    stem = FASHION_FILES[kind].format(split=split)
    for name in (stem, stem + ".gz"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {str(folder)!r}; put the official files "
        f"({FASHION_FILES['images'].format(split=split)}.gz and "
        f"{FASHION_FILES['labels'].format(split=split)}.gz from "
        "https://github.com/zalandoresearch/fashion-mnist) in that folder"
    )


def load_fashion_mnist(folder=None, split: str = "t10k"):
    """Fashion-MNIST images (n, 28, 28) uint8 and labels (n,) uint8 (Xiao et al., 2017).

    ``folder`` defaults to the ``LOWRANK_DATA`` environment variable; the files keep
    their official names, gzip-compressed or not.
    """
    import os
    from pathlib import Path

    if split not in FASHION_SPLITS:
        raise ValueError(f"split must be one of {FASHION_SPLITS}, got {split!r}")
    if folder is None:
        folder = os.environ.get("LOWRANK_DATA")
        if not folder:
            raise FileNotFoundError(
                "no Fashion-MNIST folder: pass folder=... or set LOWRANK_DATA to a folder "
                f"holding {FASHION_FILES['images'].format(split=split)}.gz and "
                f"{FASHION_FILES['labels'].format(split=split)}.gz (the official file names)"
            )
    if not Path(folder).is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST folder {str(folder)!r} does not exist; create it and put the "
            f"official files {FASHION_FILES['images'].format(split=split)}.gz and "
            f"{FASHION_FILES['labels'].format(split=split)}.gz in it"
        )
    images = read_idx(_fashion_file(folder, split, "images"))
    labels = read_idx(_fashion_file(folder, split, "labels"))
    if images.ndim != 3 or labels.ndim != 1:
        raise ValueError(
            f"{folder}: expected images of shape (n, rows, cols) and labels (n,), got "
            f"{images.shape} and {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels in split {split!r}"
        )
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{folder}: labels must lie in 0..9, got max {int(labels.max())}")
    return images, labels


# --- Task pairs with a bounded cross-task overlap ε (Section 4, chapters 7-8) ---------

EPS_OVERLAP_MODES = ("uniform", "extreme", "label")


@dataclass
class TaskPair:
    """Two tasks with max_{i,j} |⟨x_i, x'_j⟩| = max_overlap ≤ eps (Section 4's ε)."""

    first: Task
    second: Task
    eps: float
    max_overlap: float


def _largest_root_below(eps: float, dtype: torch.dtype) -> torch.Tensor:
    # the largest ρ of the output dtype whose product with itself, as the float64 check
    # computes it, stays <= eps: then every |ρ s · ρ s'| with |s|, |s'| <= 1 does too
    rho = torch.tensor(eps**0.5, dtype=dtype)
    while float(rho.double() * rho.double()) > eps:
        rho = torch.nextafter(rho, torch.zeros_like(rho))
    return rho


def eps_task_pair(
    n: int,
    d: int,
    eps: float,
    a: float = 1.0,
    overlap: str = "uniform",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> TaskPair:
    """Two unit-norm tasks with cross-task overlap max_{i,j} |⟨x_i, x'_j⟩| ≤ ε (Lemma 4's ε).

    Coordinates 0..h-1 (h = (d-1)//2) carry task 1, h..d-2 task 2 and the last one
    is shared: x = (√(1−ρ²s²)·v, ρs) with v a uniform unit vector of the task's
    block, ρ = √ε and |s| ≤ 1, so ⟨x_i, x'_j⟩ = ρ² s_i s'_j exactly and ε = 0 gives
    orthogonal subspaces. ``overlap`` picks s: ``uniform`` (s ~ U[−1, 1]),
    ``extreme`` (random signs: every pair overlaps by exactly ε) or ``label``
    (s = y: every pair overlaps by ε, coherently with the labels, the worst case
    for Lemma 4). Labels are sign(sin(a wᵀv)) with w ~ N(0, I_d) per task.
    Axis-aligned blocks keep inner products exact in floating point; GD with a
    rotation-invariant initialisation is rotation-equivariant, so nothing is lost.
    """
    check_positive(n, "n")
    if int(d) < 3:
        raise ValueError(f"d must be >= 3 (two task blocks and one shared coordinate), got {d}")
    if not 0.0 <= float(eps) <= 1.0:
        raise ValueError(f"eps must be in [0, 1] (a bound on |<x, x'>| of unit vectors), got {eps}")
    if overlap not in EPS_OVERLAP_MODES:
        raise ValueError(f"overlap must be one of {EPS_OVERLAP_MODES}, got {overlap!r}")
    rho = float(_largest_root_below(float(eps), dtype))
    h = (d - 1) // 2
    gen = torch.Generator().manual_seed(seed)
    tasks = []
    for lo, hi in ((0, h), (h, d - 1)):
        v = torch.zeros(n, d, dtype=torch.float64)
        v[:, lo:hi] = torch.randn(n, hi - lo, generator=gen, dtype=torch.float64)
        v = v / v.norm(dim=1, keepdim=True)
        w = torch.randn(d, generator=gen, dtype=torch.float64)
        y = sin_labels(v, w, a)
        # one draw whatever the mode, so one seed gives the same v and y for every ε and mode
        r = torch.rand(n, generator=gen, dtype=torch.float64)
        if overlap == "uniform":
            s = 2 * r - 1
        elif overlap == "extreme":
            s = 1.0 - 2.0 * (r < 0.5).to(torch.float64)
        else:
            s = y.to(torch.float64)
        shared = rho * s.to(torch.float64)
        x = v * torch.sqrt(1 - shared.square()).unsqueeze(1)
        x[:, d - 1] = shared
        tasks.append(Task(x.to(dtype), y.to(dtype)))
    measured = float((tasks[0].x.double() @ tasks[1].x.double().T).abs().max())
    if measured > eps:
        raise RuntimeError(f"eps_task_pair broke its guarantee: overlap {measured} > eps {eps}")
    return TaskPair(tasks[0], tasks[1], float(eps), measured)
