"""The command line: ``python -m lowrank list``, ``run NAME``, ``spectra MODEL`` and ``suite``.

Each subcommand is a function ``cmd_<name>(args) -> int`` added by an
``add_<name>(subparsers)`` helper. A user error (a bad value, a missing or corrupt file)
is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowrank.config import SCALES
from lowrank.config import scale as resolve_scale
from lowrank.core.metrics import SPECTRAL_METHODS
from lowrank.core.precision import PRECISIONS
from lowrank.runner import cache, cost, registry

DESCRIPTION = "Run the companion's experiments and read pretrained checkpoints."
EXAMPLES = """examples:
  python -m lowrank list
  python -m lowrank run fig3 --scale full --device cuda --seeds 10
  python -m lowrank run fig5 --set steps=20000 --set lams='[0.001]'
  python -m lowrank run fig3 --scale full --precision tf32
  python -m lowrank suite --scale full --minutes 15 --out results --precision tf32
  python -m lowrank suite --dry-run --minutes 1 --out /tmp/suite
  python -m lowrank spectra minilm --out results/spectra
"""
# settings that count something: an integer >= 1 (a list of them stays non-empty)
_COUNT_WORDS = ("seeds", "steps", "epochs", "n_", "hidden", "width", "depth", "batch",
                "record_every", "layers", "heads", "members", "pool", "d", "k", "tasks")


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser, but a usage error is one line (no usage block) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class UsageError(Exception):
    """A user error on the command line: printed as one line, exit code 2."""


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        inner = {_kind(v) for v in value}
        return "a JSON list" + (f" of {inner.pop().split(' ', 1)[1]}s" if len(inner) == 1 else "")
    return type(value).__name__


def _is_count(key: str) -> bool:
    return key in _COUNT_WORDS or any(key.startswith(w) for w in _COUNT_WORDS if w.endswith("_"))


def _fits(value: Any, like: Any) -> bool:
    if isinstance(like, bool):
        return isinstance(value, bool)
    if isinstance(like, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(like, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(like, list):
        if not isinstance(value, list):
            return False
        if not like:
            return True
        return all(_fits(v, like[0]) for v in value)
    if like is None:
        return True
    return isinstance(value, type(like))


def check_overrides(name: str, spec: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Refuse ``--set`` values unknown to, or of another type than, the experiment's spec."""
    unknown = sorted(set(overrides) - set(spec))
    if unknown:
        raise UsageError(
            f"--set: experiment {name!r} has no setting {unknown}; known: {', '.join(spec)}"
        )
    for key, value in overrides.items():
        like = spec[key]
        if not _fits(value, like):
            raise UsageError(
                f"--set {key}: expected {_kind(like)} (like {json.dumps(like)}), "
                f"got {json.dumps(value)}"
            )
        if isinstance(like, list) and like and not value:
            raise UsageError(f"--set {key}: expected a non-empty list like {json.dumps(like)}")
        counts = value if isinstance(value, list) else [value]
        if _is_count(key) and all(isinstance(v, int) for v in counts):
            if any(v < 1 for v in counts):
                raise UsageError(f"--set {key}: expected integers >= 1, got {json.dumps(value)}")
        if isinstance(like, float | int) and not isinstance(like, bool) and like > 0:
            if isinstance(value, int | float) and value < 0:
                raise UsageError(f"--set {key}: expected a value >= 0, got {value}")
    return overrides


def check_device(text: str | None) -> str | None:
    """Refuse a device torch does not know or this machine does not have."""
    if text is None:
        return None
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device: expected a torch device such as cpu or cuda:0, "
                         f"got {text!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: this machine has no CUDA device; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {text}: only {torch.cuda.device_count()} CUDA devices")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device: expected cpu, cuda or cuda:N, got {text!r}")
    return text


def check_out_dir(text: str) -> Path:
    """Create the output folder, refusing a file or a place that cannot be written."""
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {text}: expected a folder, but it is an existing file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".lowrank-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {text}: cannot write there ({exc.strerror or exc})") from None
    return out


def cmd_list(args: argparse.Namespace) -> int:
    """Print every registered experiment, its full-scale size and the FLOP model's time."""
    for name, exp in registry.registry().items():
        print(f"{name:<10} {exp.description}")
        print(f"{'':<10} full scale: {exp.full_cost}")
        print(f"{'':<10} {cost.summary(name, exp.full())}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run one experiment at a scale, store its table, print where it went."""
    overrides = dict(args.set or [])
    if args.seeds is not None:
        if args.seeds < 1:
            raise UsageError(f"--seeds: expected an integer >= 1, got {args.seeds}")
        overrides["seeds"] = args.seeds
    try:
        exp = registry.get(args.name)
        scale = resolve_scale(args.scale)
    except ValueError as exc:
        raise UsageError(f"run: {exc}") from None
    check_overrides(args.name, exp.spec(scale), overrides)
    check_device(args.device)
    rows = registry.run_and_save(
        args.name, scale, args.device, overrides or None, show_progress=not args.quiet,
        precision=args.precision,
    )
    csv_path, json_path = cache.paths(args.name, scale)
    print(f"{len(rows)} rows written to {csv_path} (metadata in {json_path})")
    return 0


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (numbers, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_list(sub) -> None:
    """Register ``list``."""
    p = sub.add_parser("list", help="name the experiments and their full-scale cost")
    p.set_defaults(func=cmd_list)


def add_run(sub) -> None:
    """Register ``run NAME --scale quick|full [--device D] [--seeds N]``."""
    p = sub.add_parser("run", help="run a registered experiment and store its table")
    p.add_argument("name", help="experiment name (see `python -m lowrank list`)")
    p.add_argument("--scale", choices=SCALES, default=None, help="default: LOWRANK_SCALE/quick")
    p.add_argument("--device", default=None, help="e.g. cpu, cuda (default: cuda if available)")
    p.add_argument("--seeds", type=int, default=None, help="override the number of seeds")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="matmul precision (default: LOWRANK_PRECISION, else fp64 on the CPU "
                   "and fp32 on a GPU)")
    p.add_argument(
        "--set",
        action="append",
        type=parse_setting,
        metavar="KEY=VALUE",
        help="override one spec entry (JSON value), e.g. --set steps=20000; repeatable",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)


def cmd_spectra(args: argparse.Namespace) -> int:
    """Write a checkpoint's per-layer, per-role spectra as CSV (and a figure), as chapter 6."""
    from lowrank.chapters.ch06_transformers import analyse, architecture

    check_device(args.device)
    out = check_out_dir(args.out)
    rows = analyse(args.model, method=args.method, device=args.device, show_progress=True)
    slug = re.sub(r"[^\w.\-]+", "_", rows[0]["model"])
    csv_path = out / f"{slug}-spectra.csv"
    cache.write_csv(rows, csv_path)
    arch = architecture(args.model)
    print(f"{rows[0]['model']}: {arch['layers']} layers, model dim {arch['d_model']}, "
          f"FF dim {arch['d_ff']} ({arch['family']} naming); wrote {csv_path}")
    if args.no_figures:
        return 0
    try:
        import pandas as pd

        from lowrank.book import book_style
        from lowrank.chapters.ch06_transformers import transformer_spectra

        book_style()
    except ImportError as err:  # a bare GPU machine may lack pandas/matplotlib
        print(f"figures skipped ({err})", file=sys.stderr)
        return 0
    fig = transformer_spectra(pd.DataFrame(rows), rows[0]["model"])
    fig_path = out / f"{slug}-spectra.png"
    fig.savefig(fig_path, dpi=150, bbox_inches="tight")
    print(f"wrote {fig_path}")
    return 0


def add_spectra(sub) -> None:
    """Register ``spectra MODEL [--out DIR] [--method exact|power]``."""
    p = sub.add_parser(
        "spectra",
        help="stable ranks and norms of a pretrained transformer (Figures 1, 4, Table 1)",
        description="Stream a safetensors checkpoint (folder, .safetensors file, Hugging Face id "
        "already in the local cache, or 'minilm') and write per-layer, per-role Frobenius norms, "
        "spectral norms and stable ranks as CSV plus a figure.",
    )
    p.add_argument("model", help="checkpoint folder/file, cached Hugging Face id, or 'minilm'")
    p.add_argument("--out", default="results/spectra", help="output folder (default %(default)s)")
    p.add_argument("--method", choices=SPECTRAL_METHODS, default="exact",
                   help="spectral norm by exact svdvals, block power iteration or Lanczos")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--no-figures", action="store_true", help="write the CSV only")
    p.set_defaults(func=cmd_spectra)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand."""
    parser = OneLineParser(
        prog="python -m lowrank", description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: faster on small matrices)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_list(sub)
    add_run(sub)
    add_spectra(sub)
    from lowrank.runner.suite import add_suite  # suite.py imports this module's helpers

    add_suite(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and dispatch to the subcommand's function."""
    args = build_parser().parse_args(argv)
    import torch

    if args.threads < 1:
        return _fail(f"--threads: expected an integer >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    from lowrank.book import notices_as_one_line

    notices_as_one_line()  # 'note: …', no source path
    try:
        return args.func(args)
    except UsageError as exc:
        return _fail(str(exc))
    except (ValueError, TypeError, FileNotFoundError, OSError) as exc:
        return _fail(_one_line(exc))
    except Exception as exc:  # a corrupt checkpoint raises the reader's own error type
        if type(exc).__module__.split(".")[0] in ("safetensors", "json"):
            return _fail(f"cannot read the checkpoint: {_one_line(exc)}")
        raise


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 600 else text[:597] + "..."


def _fail(message: str) -> int:
    print(f"python -m lowrank: error: {message}", file=sys.stderr)
    return 2
