"""The command line: ``python -m lowrank list`` and ``python -m lowrank run NAME``.

    python -m lowrank run fig3 --scale full --device cuda --seeds 10
    python -m lowrank run fig5 --set steps=20000 --set lams='[0.001]'


Each subcommand is a function ``cmd_<name>(args) -> int`` added by an
``add_<name>(subparsers)`` helper; optional modules (``lowrank.spectra``) add
their own subcommands through ``add_cli(subparsers)`` when they exist.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from lowrank import experiments, results
from lowrank.config import SCALES
from lowrank.config import scale as resolve_scale

OPTIONAL_CLI_MODULES = ("lowrank.spectra",)


def cmd_list(args: argparse.Namespace) -> int:
    """Print every registered experiment with its full-scale cost."""
    for name, exp in experiments.registry().items():
        print(f"{name:<10} {exp.description}")
        print(f"{'':<10} full scale: {exp.full_cost}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run one experiment at a scale, store its table, print where it went."""
    overrides = dict(args.set or [])
    if args.seeds is not None:
        if args.seeds < 1:
            raise SystemExit(f"--seeds must be >= 1, got {args.seeds}")
        overrides["seeds"] = args.seeds
    try:
        exp = experiments.get(args.name)
        scale = resolve_scale(args.scale)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    unknown = set(overrides) - set(exp.spec(scale))
    if unknown:
        raise SystemExit(f"experiment {args.name!r} has no setting {sorted(unknown)} to override")
    rows = experiments.run_and_save(
        args.name, scale, args.device, overrides or None, show_progress=not args.quiet
    )
    csv_path, json_path = results.paths(args.name, scale)
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
    p.add_argument(
        "--set",
        action="append",
        type=parse_setting,
        metavar="KEY=VALUE",
        help="override one spec entry (JSON value), e.g. --set steps=20000; repeatable",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every built-in and optional subcommand."""
    parser = argparse.ArgumentParser(prog="python -m lowrank", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_list(sub)
    add_run(sub)
    for mod in OPTIONAL_CLI_MODULES:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        module.add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and dispatch to the subcommand's function."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
