"""Bad input of every kind gets a clear error naming the argument (API) or one line (CLI).

The API cases call public functions with one wrong argument each and assert the error
names it; the CLI cases run ``python -m lowrank`` in a subprocess and assert exit code 2,
one line on stderr naming the argument or file, and no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from lowrank.core.engine import gd, sgd
from lowrank.core.metrics import alignment_cosine, alignment_residual, stable_rank
from lowrank.data.fashion_mnist import data_problem, missing_files

F64 = torch.float64


def net():
    return [torch.randn(3, 2, dtype=F64), torch.randn(1, 3, dtype=F64)]


X = torch.randn(4, 2, dtype=F64)
Y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=F64)

API_CASES = {
    "grads wider": (lambda: alignment_residual(net(), [torch.ones(3, 2), torch.ones(1, 1)], 0.1),
                    "grads"),
    "grads broadcast row": (lambda: alignment_residual(
        net(), [torch.ones(1, 2, dtype=F64), torch.ones(1, 3, dtype=F64)], 0.1), "grads"),
    "grads too few": (lambda: alignment_residual(net(), [torch.ones(3, 2, dtype=F64)], 0.1),
                      "grads"),
    "cosine grads broadcast": (lambda: alignment_cosine(
        net(), [torch.ones(3, 1, dtype=F64), torch.ones(1, 3, dtype=F64)]), "grads"),
    "cosine grads too many": (lambda: alignment_cosine(net(), net() + [torch.ones(1, 1)]),
                              "grads"),
    "residual lam negative": (lambda: alignment_residual(net(), net(), -1.0), "lam"),
    "residual lam zero": (lambda: alignment_residual(net(), net(), 0.0), "lam"),
    "gd steps float": (lambda: gd(net(), X, Y, 0.1, 0.1, 2.5), "steps"),
    "gd steps string": (lambda: gd(net(), X, Y, 0.1, 0.1, "5"), "steps"),
    "gd steps None": (lambda: gd(net(), X, Y, 0.1, 0.1, None), "steps"),
    "gd steps negative": (lambda: gd(net(), X, Y, 0.1, 0.1, -1), "steps"),
    "gd record_every float": (lambda: gd(net(), X, Y, 0.1, 0.1, 3, record_every=1.5),
                              "record_every"),
    "gd record_every zero": (lambda: gd(net(), X, Y, 0.1, 0.1, 3, record_every=0),
                             "record_every"),
    "gd labels 0/1": (lambda: gd(net(), X, (Y + 1) / 2, 0.1, 0.1, 2), "y"),
    "gd labels 2": (lambda: gd(net(), X, 2 * Y, 0.1, 0.1, 2), "y"),
    "sgd labels 0.5": (lambda: sgd(net(), X, 0.5 * Y, 0.1, 0.1, 1, 2), "y"),
    "sgd epochs float": (lambda: sgd(net(), X, Y, 0.1, 0.1, 1.5, 2), "epochs"),
    "sgd batch_size zero": (lambda: sgd(net(), X, Y, 0.1, 0.1, 1, 0), "batch_size"),
    "gd x float32": (lambda: gd(net(), X.float(), Y, 0.1, 0.1, 2), "x"),
    "gd x wrong width": (lambda: gd(net(), X[:, :1], Y, 0.1, 0.1, 2), "x"),
    "gd y wrong length": (lambda: gd(net(), X, Y[:3], 0.1, 0.1, 2), "y"),
    "gd eta zero": (lambda: gd(net(), X, Y, 0.1, 0.0, 2), "eta"),
    "gd lam negative": (lambda: gd(net(), X, Y, -0.1, 0.1, 2), "lam"),
    "gd x NaN": (lambda: gd(net(), X * float("nan"), Y, 0.1, 0.1, 2), "x"),
    "gd empty weights": (lambda: gd([], X, Y, 0.1, 0.1, 2), "weights"),
    "stable_rank zero": (lambda: stable_rank(torch.zeros(3, 3, dtype=F64)), "w"),
    "stable_rank vector": (lambda: stable_rank(torch.ones(3, dtype=F64)), "w"),
    "missing_files split": (lambda: missing_files(splits=("val",)), "splits"),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_refuses_and_names_the_argument(case):
    call, name = API_CASES[case]
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert name in str(info.value), f"{case}: {info.value}"


def test_stable_rank_does_not_overflow():
    eye = torch.eye(4, dtype=F64)
    assert float(stable_rank(1e200 * eye)) == pytest.approx(2.0, rel=1e-12)
    assert float(stable_rank(1e-200 * eye)) == pytest.approx(2.0, rel=1e-12)


def test_data_check_names_four_files_and_the_source(tmp_path):
    text = data_problem(tmp_path)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in text
    assert "LOWRANK_DATA" in text and "zalandoresearch/fashion-mnist" in text
    assert "\n" not in text and str(tmp_path) in text
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"")
    assert missing_files(tmp_path) == ["t10k-labels-idx1-ubyte.gz"]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "afile").write_text("x")
    (root / "trunc.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    (root / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    (root / "empty").mkdir()
    ro = root / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return root


CLI_CASES = [
    (["run", "fig3", "--set", "seeds=2.5"], "seeds"),
    (["run", "fig3", "--set", "seeds=two"], "seeds"),
    (["run", "fig3", "--set", "seeds=0"], "seeds"),
    (["run", "fig3", "--set", "hidden=[]"], "hidden"),
    (["run", "fig3", "--set", "hidden=[16, 2.5]"], "hidden"),
    (["run", "fig3", "--set", "hidden=16"], "hidden"),
    (["run", "fig2", "--set", "epochs=0"], "epochs"),
    (["run", "fig2", "--set", "epochs=-3"], "epochs"),
    (["run", "fig3", "--set", "stepz=3"], "stepz"),
    (["run", "fig3", "--set", "steps"], "KEY=VALUE"),
    (["run", "fig3", "--seeds", "0"], "--seeds"),
    (["run", "fig3", "--seeds", "1.5"], "--seeds"),
    (["run", "fig3", "--device", "bogus"], "--device"),
    (["run", "fig3", "--device", "cuda:99"], "--device"),
    (["run", "fig3", "--scale", "huge"], "--scale"),
    (["run", "nope"], "unknown experiment"),
    (["--threads", "0", "list"], "--threads"),
    (["spectra", "{root}/trunc.safetensors", "--out", "{root}/o1"], "trunc.safetensors"),
    (["spectra", "{root}/junk.safetensors", "--out", "{root}/o2"], "junk.safetensors"),
    (["spectra", "{root}/empty", "--out", "{root}/o3"], "no .safetensors"),
    (["spectra", "{root}/no-such-folder", "--out", "{root}/o4"], "no-such-folder"),
    (["spectra", "minilm", "--out", "{root}/afile"], "--out"),
    (["spectra", "minilm", "--out", "{root}/ro/sub"], "--out"),
    (["spectra", "minilm", "--method", "magic"], "--method"),
    (["frobnicate"], "frobnicate"),
]


@pytest.mark.parametrize("argv,name", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_refuses_in_one_line(argv, name, bad_files, tmp_path):
    if "/ro/" in " ".join(argv) and os.geteuid() == 0:
        pytest.skip("root writes through read-only permissions")
    argv = [a.format(root=bad_files) for a in argv]
    env = {**os.environ, "LOWRANK_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "lowrank", *argv], capture_output=True,
                          text=True, env=env, timeout=120)
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert name.format(root=bad_files) in err, err
    assert not list(tmp_path.iterdir())


def test_cli_missing_data_folder_is_one_line(tmp_path):
    env = {**os.environ, "LOWRANK_RESULTS": str(tmp_path), "LOWRANK_DATA": str(tmp_path / "x")}
    proc = subprocess.run([sys.executable, "-m", "lowrank", "run", "fig6", "--device", "cpu",
                           "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "Fashion-MNIST" in err and str(tmp_path / "x") in err
