"""The results cache: tidy CSV tables with a JSON sidecar, written atomically.

A table is reused only when its sidecar's spec matches the one asked for and the CSV's
SHA-256 matches the sidecar; a quick-scale table must also come from the same sources,
hashed per experiment by :func:`source_hash`: ``lowrank/core`` and the experiment's own
module with every ``lowrank`` module it imports. Anything else is reported with a
warning and recomputed. Only csv/json are read back: nothing is ever unpickled.
"""

from __future__ import annotations

import ast
import csv
import datetime as _dt
import hashlib
import importlib
import io
import json
import os
import platform
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from lowrank.config import CHECKOUT, results_dir


class Notice(UserWarning):
    """A note for the reader (a stored table not used, a precision not offered): the book and
    the command line print it as one line, with no source path of the machine."""


def shown(path: Path) -> str:
    """``path`` as a page may print it: relative to the checkout, else just its name."""
    path = Path(path).resolve()
    return str(path.relative_to(CHECKOUT)) if path.is_relative_to(CHECKOUT) else path.name

PACKAGE = Path(__file__).resolve().parent.parent


def _module_file(dotted: str) -> Path | None:
    """The source file of a ``lowrank`` module (a package's ``__init__.py``), None if none."""
    parts = dotted.split(".")
    if parts[0] != "lowrank":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_files(path: Path) -> set[Path]:
    """The ``lowrank`` modules one file imports, at module level or inside functions."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from lowrank.x import y`: y is the submodule lowrank.x.y, or a name of lowrank.x
            names = []
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.append(sub if _module_file(sub) is not None else node.module)
        else:
            continue
        found.update(f for f in map(_module_file, names) if f is not None)
    return found


def source_files(module_name: str) -> list[Path]:
    """``lowrank/core`` and ``module_name``'s file with every ``lowrank`` module it imports.

    Imports are followed transitively (lazy imports inside functions too), so a chapter
    that borrows another chapter's code depends on that code, and on nothing else.
    """
    files = set(PACKAGE.joinpath("core").rglob("*.py"))
    seen: set[Path] = set()
    todo = [Path(importlib.import_module(module_name).__file__).resolve()]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_imported_files(path) - seen)
    return sorted(files | seen)


def source_hash(module_name: str) -> str:
    """SHA-256 over :func:`source_files`: the cache key of a quick table of that module."""
    h = hashlib.sha256()
    for path in source_files(module_name):
        name = path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE.parent) else path
        h.update(str(name).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rows_to_csv(rows: list[dict[str, Any]]) -> bytes:
    """Tidy rows (one dict each, same keys) as CSV bytes."""
    if not rows:
        raise ValueError("rows must be a non-empty list of dicts")
    buf = io.StringIO()
    fields = list(rows[0])
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Write tidy rows as CSV atomically (a unique temp file, fsync, rename)."""
    _atomic_write(Path(path), rows_to_csv(rows))


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def paths(name: str, scale: str) -> tuple[Path, Path]:
    """The CSV and JSON sidecar paths of one experiment at one scale."""
    base = results_dir() / f"{name}-{scale}"
    return base.with_suffix(".csv"), base.with_suffix(".json")


def save_result(
    rows: list[dict[str, Any]],
    name: str,
    scale: str,
    spec: dict[str, Any],
    wall_time_s: float,
    device: str,
    *,
    source_sha256: str,
    precision: str = "fp64",
    emulated: bool = False,
) -> Path:
    """Write the table and its sidecar atomically (CSV first, sidecar last).

    ``source_sha256`` is the experiment's :func:`source_hash`; ``precision`` the matmul
    precision it ran at (``emulated``: TF32/bf16 rounding emulated on the CPU).
    """
    data = rows_to_csv(rows)
    csv_path, json_path = paths(name, scale)
    meta = {
        "experiment": name,
        "scale": scale,
        "spec": spec,
        "device": device,
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "precision": precision,
        "precision_emulated": emulated,
        "wall_time_s": round(wall_time_s, 3),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "csv_sha256": hashlib.sha256(data).hexdigest(),
        "source_sha256": source_sha256,
        "rows": len(rows),
    }
    _atomic_write(csv_path, data)
    _atomic_write(json_path, json.dumps(meta, indent=2, sort_keys=True).encode())
    return csv_path


def load_meta(name: str, scale: str) -> dict[str, Any] | None:
    """The sidecar of a stored table, or None when there is none."""
    _, json_path = paths(name, scale)
    if not json_path.exists():
        return None
    return json.loads(json_path.read_text())


def _stored_table(name: str, scale: str, spec: dict[str, Any], source_sha256: str,
                  precisions: tuple[str, ...]) -> tuple[bytes | None, str | None]:
    """(the CSV's bytes, None) when a valid table is stored for ``spec``; else (None, the
    warning saying why not), with no warning when no table is stored at all."""
    csv_path, json_path = paths(name, scale)
    if not csv_path.exists() or not json_path.exists():
        return None, None
    try:
        meta = json.loads(json_path.read_text())
        data = csv_path.read_bytes()
        if not isinstance(meta, dict):
            raise ValueError(f"the sidecar holds a JSON {type(meta).__name__}, not an object")
    except (OSError, ValueError) as exc:  # ValueError: bad JSON, bad UTF-8, not an object
        return None, f"{shown(json_path)} is unreadable ({exc}); recomputing"
    reason = None
    if meta.get("spec") != json.loads(json.dumps(spec)):
        reason = "its spec differs from the one asked for"
    elif meta.get("precision") not in precisions:
        reason = (f"it was computed at precision {meta.get('precision')!r}, "
                  f"not {' or '.join(precisions)}")
    elif meta.get("csv_sha256") != hashlib.sha256(data).hexdigest():
        reason = "the CSV does not match its recorded SHA-256 (corrupt or edited)"
    elif scale == "quick" and meta.get("source_sha256") != source_sha256:
        reason = "it was computed by other lowrank sources"
    if reason:
        return None, f"ignoring {shown(csv_path)}: {reason}; recomputing"
    return data, None


def invalid_reason(name: str, scale: str, spec: dict[str, Any], *, source_sha256: str,
                   precisions: tuple[str, ...] = ("fp64",)) -> str | None:
    """None when :func:`load_result` would return the stored table, else why not (no pandas
    needed: what the suite asks to resume)."""
    data, why = _stored_table(name, scale, spec, source_sha256, precisions)
    if data is not None:
        return None
    return why or f"no table stored at {paths(name, scale)[0]}"


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented JSON atomically (a unique temp file, fsync, rename)."""
    _atomic_write(Path(path), (json.dumps(obj, indent=2) + "\n").encode())


def load_result(name: str, scale: str, spec: dict[str, Any], *, source_sha256: str,
                precisions: tuple[str, ...] = ("fp64",)):
    """The stored table as a pandas DataFrame if it is valid for ``spec``, else None (warned).

    A quick-scale table must have been computed by the sources ``source_sha256`` hashes,
    and every table at one of ``precisions``.
    """
    data, why = _stored_table(name, scale, spec, source_sha256, precisions)
    if data is None:
        if why:
            warnings.warn(why, Notice, stacklevel=2)
        return None
    import pandas as pd

    return pd.read_csv(io.BytesIO(data))
