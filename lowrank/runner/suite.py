"""``python -m lowrank suite``: every experiment within a minute budget, preflight first.

1. **Preflight** (:mod:`lowrank.runner.preflight`). Each experiment to run executes its
   smoke spec (a few steps at the full shapes) on the device at the chosen precision and on
   the CPU in float64; the tables must agree within ``TOLERANCE[precision]`` × each
   column's scale. A mismatch, or an error on the device, stops the suite before any long
   run (:class:`~lowrank.runner.preflight.PreflightError`, naming the experiment, the column
   and the error); an error of the CPU reference itself (missing data, a missing package)
   marks only that experiment failed.
2. **Runs,** in ``PRIORITY`` order, then the rest by name; each table is written atomically
   to the output folder as soon as it is done. An experiment is skipped when its predicted
   time (:mod:`lowrank.runner.cost`, rescaled by measured / predicted of what has run) no
   longer fits the minutes left; one whose valid table is already there is done (resume).
3. **Manifest:** ``OUT/manifest.json`` (device, precision, versions, per experiment its
   status, wall time, FLOPs, FLOP/s, predicted and measured time, why skipped), rewritten
   atomically after every stage, so a killed run leaves one.

``--dry-run`` does all of it in seconds on the CPU with the quick specs cut by ``smoke()``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy
import torch

from lowrank.config import SCALES, default_device, using_results_dir
from lowrank.config import precision as resolve_precision
from lowrank.config import scale as resolve_scale
from lowrank.core.precision import PRECISIONS
from lowrank.runner import cache, cost, registry
from lowrank.runner.cli import UsageError, check_device, check_out_dir
from lowrank.runner.preflight import PreflightError, one_line, preflight

#: the paper's figures first, in this order; then every other experiment by name
PRIORITY = ("fig3", "fig5", "fig2", "fig6")
MANIFEST = "manifest.json"


class Terminated(BaseException):
    """SIGTERM (e.g. from `timeout`) while the suite runs: recorded in the manifest (a
    BaseException, like KeyboardInterrupt, so no handler of errors swallows it)."""


def suite_order(names) -> list[str]:
    """``names`` in run order: PRIORITY first, then the rest sorted by name."""
    names = set(names)
    return [n for n in PRIORITY if n in names] + sorted(names - set(PRIORITY))


def predicted_seconds(name: str, spec: dict, device: torch.device, precision: str,
                      on_device: bool) -> float | None:
    """The cost model's time: on a GPU its published peak and bandwidth (FLOPs and the
    elementwise passes' bytes) for what runs there, else this CPU's measured rate; None
    without a FLOP model."""
    try:
        if device.type == "cuda" and on_device:
            gpu = cost.H200 if "H200" in torch.cuda.get_device_name(device) else cost.H100
            prec = precision if precision in gpu.peak else "fp32"
            return cost.device_seconds(name, spec, gpu, prec, memory=True)
        return cost.cpu_seconds(name, spec, "fp64" if precision == "fp64" else "fp32")
    except ValueError:
        return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def run_suite(out: Path, scale: str = "full", minutes: float = 15.0,
              precision: str | None = None, device: str | torch.device | None = None,
              dry_run: bool = False, only: list[str] | None = None,
              show_progress: bool = False, log=None) -> dict[str, Any]:
    """Preflight, then every experiment in priority order within ``minutes``; the manifest.

    Results go to ``out`` (``out/NAME-SCALE.csv`` and ``.json``), the manifest to
    ``out/manifest.json``. Raises :class:`PreflightError` after writing the manifest.
    """
    start = time.perf_counter()
    deadline = start + 60.0 * minutes
    log = log or (lambda message: print(message, flush=True))
    dev = torch.device(device) if device is not None else (
        torch.device("cpu") if dry_run else default_device())
    prec = resolve_precision(precision, dev)
    sc = "quick" if dry_run else resolve_scale(scale)
    names = suite_order(only if only else registry.registry())
    exps = {n: registry.get(n) for n in names}
    specs = {n: e.smoke(e.spec(sc)) if dry_run else e.spec(sc) for n, e in exps.items()}
    precs = {n: _offered(e, prec, log, specs[n]) for n, e in exps.items()}
    manifest: dict[str, Any] = {
        "suite": {"status": "running", "scale": sc, "dry_run": dry_run, "minutes": minutes,
                  "precision": prec, "device": str(dev), "device_name": _device_name(dev),
                  "torch": torch.__version__, "numpy": numpy.__version__,
                  "python": platform.python_version(),
                  "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
                  "started": _now(), "order": names},
        "preflight": {},
        "experiments": {n: {"status": "pending", "precision": precs[n]} for n in names},
    }
    path = Path(out) / MANIFEST
    entries = manifest["experiments"]

    def save() -> None:
        manifest["suite"]["updated"] = _now()
        manifest["suite"]["elapsed_s"] = round(time.perf_counter() - start, 3)
        cache.write_json(manifest, path)

    spent = {"device": [0.0, 0.0], "cpu": [0.0, 0.0]}  # measured, predicted seconds
    with using_results_dir(out):
        try:
            pending = [n for n in names if not _resumed(n, exps[n], sc, specs[n], precs[n],
                                                        entries, out)]
            save()
            for n in pending:
                log(f"preflight {n} ...")
                _preflight_one(n, exps[n], specs[n], dev, precs[n], manifest, save)
            for n in pending:
                if entries[n]["status"] != "pending":
                    continue
                where = "device" if manifest["preflight"][n].get("on_device") else "cpu"
                raw = predicted_seconds(n, specs[n], dev, precs[n], where == "device")
                ratio = spent[where][0] / spent[where][1] if spent[where][1] > 0 else 1.0
                guess = None if raw is None else raw * ratio
                left = deadline - time.perf_counter()
                entry = {"precision": precs[n], "predicted_s": raw, "predicted_calibrated_s": guess,
                         "calibration": ratio, "runs_on": where, "flops": _flops(n, specs[n])}
                if left <= 0 or (guess is not None and guess > left):
                    need = "nothing" if guess is None else f"{guess:.3g} s"
                    entries[n] = {**entry, "status": "skipped",
                                  "reason": f"predicted {need} (calibrated ×{ratio:.3g}) but "
                                            f"{max(left, 0):.3g} s of the budget left"}
                    log(f"skip {n}: {entries[n]['reason']}")
                    save()
                    continue
                entries[n] = {**entry, "status": "running", "started": _now()}
                save()
                log(f"run {n} (predicted {'?' if guess is None else f'{guess:.3g}'} s) ...")
                t0 = time.perf_counter()
                try:
                    rows = registry.run_and_save(n, sc, dev, specs[n] if dry_run else None,
                                                 show_progress, precs[n])
                except Exception as exc:
                    entries[n] = {**entry, "status": "failed", "reason": one_line(exc),
                                  "wall_s": round(time.perf_counter() - t0, 3)}
                    log(f"failed {n}: {entries[n]['reason']}")
                    save()
                    continue
                wall = time.perf_counter() - t0
                if raw:
                    spent[where][0] += wall
                    spent[where][1] += raw
                flops = entry["flops"]
                entries[n] = {**entry, "status": "done", "wall_s": round(wall, 3),
                              "measured_s": round(wall, 3), "rows": len(rows),
                              "flop_per_s": flops / wall if flops else None,
                              "measured_over_predicted": wall / raw if raw else None,
                              "csv": str(cache.paths(n, sc)[0])}
                log(f"done {n} in {wall:.1f} s")
                save()
            manifest["suite"]["status"] = "finished"
        except BaseException as exc:
            if manifest["suite"]["status"] == "running":
                manifest["suite"]["status"] = f"interrupted ({type(exc).__name__})"
            for entry in entries.values():
                if entry["status"] == "running":
                    entry.update(status="interrupted", reason=f"stopped by {one_line(exc)}")
            raise
        finally:
            manifest["suite"]["finished"] = _now()
            manifest["suite"]["calibration"] = {
                k: (m / p if p else None) for k, (m, p) in spent.items()}
            save()
    return manifest


def _resumed(name, exp, scale, spec, precision, entries, out) -> bool:
    """Whether a valid table of ``name`` is already in ``out`` (then its entry is done)."""
    why = cache.invalid_reason(name, scale, spec, precisions=(precision,),
                               source_sha256=cache.source_hash(exp.module))
    if why is not None:
        return False
    meta = cache.load_meta(name, scale) or {}
    entries[name] = {"status": "done", "resumed": True, "precision": precision,
                     "wall_s": meta.get("wall_time_s"),
                     "reason": f"a valid table is already in {out}"}
    return True


def _preflight_one(name, exp, spec, device, precision, manifest, save) -> None:
    """Preflight ``name`` into the manifest; a failure is saved, then raised."""
    try:
        result = preflight(exp, spec, device, precision)
    except PreflightError as exc:
        manifest["preflight"][name] = {"status": "failed", "error": exc.error}
        manifest["suite"]["status"] = "preflight failed"
        save()
        raise
    manifest["preflight"][name] = result
    if result["status"] == "failed":
        manifest["suite"]["status"] = "preflight failed"
        save()
        raise PreflightError(name, result["worst_column"], result["error"])
    if result["status"] == "reference failed":
        manifest["experiments"][name] = {
            "status": "failed", "precision": precision,
            "reason": f"preflight: the CPU reference raised {result['error']}"}
    save()


def _offered(exp, precision: str, log, spec=None) -> str:
    """The precision ``exp`` runs at in a suite at ``precision`` (the finer one it offers)."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        chosen = registry.offered_precision(exp, precision, strict=False, spec=spec)
    if chosen != precision:
        log(f"{exp.name} does not offer {precision}: it runs at {chosen}")
    return chosen


def _flops(name: str, spec: dict) -> float | None:
    try:
        return cost.flops(name, spec)
    except ValueError:
        return None


def cmd_suite(args: argparse.Namespace) -> int:
    """Run the suite; print one line per stage and a summary (exit 1 on a preflight failure)."""
    if args.minutes < 0 or args.minutes != args.minutes:
        raise UsageError(f"--minutes: expected a number >= 0, got {args.minutes}")
    check_device(args.device)
    known = registry.registry()
    chosen = {}
    for flag, text in (("--only", args.only), ("--exclude", args.exclude)):
        chosen[flag] = [n for n in (text or "").split(",") if n]
        unknown = [n for n in chosen[flag] if n not in known]
        if unknown:
            raise UsageError(f"{flag}: unknown experiment {unknown}; known: {', '.join(known)}")
    only = [n for n in (chosen["--only"] or known) if n not in chosen["--exclude"]]
    if not only:
        raise UsageError("--only/--exclude: no experiment left to run")
    out = check_out_dir(args.out)

    def on_term(signum, frame):
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        manifest = run_suite(out, args.scale, args.minutes, args.precision, args.device,
                             args.dry_run, only, show_progress=not args.quiet)
    except PreflightError as exc:
        print(f"python -m lowrank suite: error: {exc} (nothing long was run; see "
              f"{out / MANIFEST})", file=sys.stderr)
        return 1
    except Terminated as exc:
        print(f"python -m lowrank suite: terminated ({exc}); see {out / MANIFEST}",
              file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts: dict[str, int] = {}
    for entry in manifest["experiments"].values():
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    print(f"suite {manifest['suite']['status']}: "
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + f"; manifest {out / MANIFEST}")
    return 0


def add_suite(sub) -> None:
    """Register ``suite --scale S --minutes M --out DIR [--precision P] [--dry-run]``."""
    p = sub.add_parser(
        "suite", help="preflight, then every experiment within a minute budget, resumable",
        description="Preflight (each experiment's first steps at full shapes on the device "
        "against float64 on the CPU), then every experiment in priority order (fig3, fig5, "
        "fig2, fig6, the rest) while its predicted time fits the budget; each table is saved "
        "as it finishes, a rerun resumes, and OUT/manifest.json records every stage.",
    )
    p.add_argument("--scale", choices=SCALES, default=None, help="default: LOWRANK_SCALE/quick")
    p.add_argument("--minutes", type=float, default=15.0, help="budget (default %(default)s)")
    p.add_argument("--out", default="results", help="results folder (default %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="matmul precision (default fp64 on the CPU, fp32 on a GPU)")
    p.add_argument("--device", default=None, help="default: cuda when available (cpu dry run)")
    p.add_argument("--only", default=None, metavar="A,B", help="only these experiments")
    p.add_argument("--exclude", default=None, metavar="A,B", help="all but these experiments")
    p.add_argument("--dry-run", action="store_true",
                   help="every stage at tiny sizes (quick specs cut by smoke()) in seconds")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_suite)
