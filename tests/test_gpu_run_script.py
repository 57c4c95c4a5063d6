"""benchmarks/gpu_run.sh --dry-run: every stage of the GPU session on the CPU at tiny sizes.

Two experiments only (GPU_RUN_ONLY), so each run takes seconds; the whole suite's dry run is
tests/runner/test_suite.py's. Marked slow (about 15 s and 30 s here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_run.sh"


def _run(out: Path, env: dict[str, str] | None = None, *args: str):
    full_env = {**os.environ, "PYTHON": sys.executable, "GPU_RUN_ONLY": "fig3,lemma1",
                "GPU_RUN_THREADS": "1", **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=full_env, timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_the_dry_run_writes_every_stage_output(tmp_path):
    out = tmp_path / "gpu"
    proc = _run(out, None, "--dry-run", "1", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("info.txt", "suite.log", "throughput.txt", "record_norms.txt", "summary.txt",
                 "profile.log",
                 "results/manifest.json", "results/fig3-quick.csv", "results/lemma1-quick.json",
                 "profile/trace.json", "profile/key_averages.txt", "profile/profile.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    info = (out / "info.txt").read_text()
    assert "torch" in info and "python" in info and "nvidia-smi" in info
    throughput = (out / "throughput.txt").read_text()
    assert throughput.count("| batched / naive |") == 2 and "vmap" in throughput
    assert "| spectral_norm_lanczos |" in (out / "record_norms.txt").read_text()
    manifest = json.loads((out / "results" / "manifest.json").read_text())
    assert manifest["suite"]["status"] == "finished" and manifest["suite"]["precision"] == "tf32"
    assert {e["status"] for e in manifest["experiments"].values()} == {"done"}
    json.loads((out / "profile" / "trace.json").read_text())
    summary = (out / "summary.txt").read_text()
    assert "profile" in summary and "FAILED" not in summary and "fig3" in summary


@pytest.mark.slow
def test_a_preflight_failure_reruns_the_suite_without_that_experiment(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent("""
        import os
        if os.environ.get("INJECT_PREFLIGHT_FAILURE"):
            from lowrank.core import precision as mp
            from lowrank.runner import registry
            exp = registry.get(os.environ["INJECT_PREFLIGHT_FAILURE"])
            original = exp.run

            def run(spec, device, show_progress=False):
                rows = original(spec, device, show_progress)
                if mp.active() != "fp64":
                    rows = [{**r, "value": r["value"] + 1.0} for r in rows]
                return rows

            exp.run = run
    """))
    out = tmp_path / "gpu"
    env = {"PYTHONPATH": str(site), "INJECT_PREFLIGHT_FAILURE": "fig3"}
    proc = _run(out, env, "--dry-run", "1", str(out))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    failed = json.loads((out / "results" / "manifest-preflight-1.json").read_text())
    assert failed["suite"]["status"] == "preflight failed"
    assert failed["preflight"]["fig3"]["status"] == "failed"
    manifest = json.loads((out / "results" / "manifest.json").read_text())
    assert manifest["suite"]["status"] == "finished"
    assert list(manifest["experiments"]) == ["lemma1"]
    assert not (out / "results" / "fig3-quick.csv").exists()
    assert (out / "results" / "lemma1-quick.csv").exists()
    summary = (out / "summary.txt").read_text()
    assert "suite (try 1)          FAILED" in summary and "suite (try 2)          ok" in summary


def test_bad_arguments_are_refused(tmp_path):
    for args, said in ((["1"], "usage"), (["-3", str(tmp_path)], "MINUTES"),
                       (["0", str(tmp_path)], "MINUTES")):
        proc = _run(tmp_path, None, "--dry-run", *args)
        assert proc.returncode == 2 and said in proc.stderr, (args, proc.stderr)
    target = tmp_path / "file"
    target.write_text("x")
    proc = _run(tmp_path, None, "--dry-run", "1", str(target))
    assert proc.returncode == 2 and "existing file" in proc.stderr
