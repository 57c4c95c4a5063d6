"""The package's layout rules, as tests: the shape of lowrank/ stays what README's Layout says."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import jupytext
import pytest

from lowrank.runner import registry

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lowrank"
MODULES = sorted(PACKAGE.rglob("*.py"))
CHAPTER_PAGE = re.compile(r"^(\d\d)_(\w+)\.md$")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _book_cells() -> list[tuple[str, str]]:
    cells = []
    for page in sorted((ROOT / "book").glob("*.md")):
        if "jupytext:" not in page.read_text(encoding="utf-8").split("\n---", 1)[0]:
            continue  # a plain page, not a notebook
        nb = jupytext.read(page)
        cells += [(f"{_rel(page)} cell {i}", c.source) for i, c in enumerate(nb.cells)
                  if c.cell_type == "code"]
    return cells


def _sources() -> list[tuple[str, str]]:
    tests, benchmarks = (ROOT / "tests").rglob("*.py"), (ROOT / "benchmarks").glob("*.py")
    files = MODULES + sorted(tests) + sorted(benchmarks)
    return [(_rel(p), p.read_text(encoding="utf-8")) for p in files] + _book_cells()


def _imports(tree: ast.AST) -> list[str]:
    """Every module an AST imports (lazy imports inside functions included)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_no_module_is_over_400_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 400


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").rglob("*.py")), ids=_rel)
def test_core_imports_only_core(path):
    allowed = ("lowrank.core",)
    for name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        if name == "lowrank" or name.startswith("lowrank."):
            assert name.startswith(allowed), f"{_rel(path)} imports {name}"


def test_no_private_name_is_imported_or_used_across_modules():
    bad = []
    for where, text in _sources():
        tree = ast.parse(text)
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lowrank"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        bad.append(f"{where}: from {node.module} import {a.name}")
                    modules.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                modules |= {a.asname or a.name.split(".")[0] for a in node.names
                            if a.name.startswith("lowrank")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in modules):
                bad.append(f"{where}: {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def test_environment_variables_are_read_in_config_only():
    for path in MODULES:
        if path != PACKAGE / "config.py":
            text = path.read_text(encoding="utf-8")
            assert "os.environ" not in text and "getenv" not in text, _rel(path)


def _mentions_eta(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and "eta" in n.id for n in ast.walk(node))


def _is_decay_factor(node: ast.AST) -> bool:
    """1 − (an expression with eta): the factor of W in the weight-decay update."""
    return (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub)
            and isinstance(node.left, ast.Constant) and node.left.value == 1
            and _mentions_eta(node.right))


def test_the_update_step_is_written_in_the_engine_only():
    bad = []
    for path in MODULES:
        if path == PACKAGE / "core" / "engine.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("mul_", "sub_", "add_", "addcmul_"):
                    bad.append(f"{_rel(path)}:{node.lineno} in-place .{node.func.attr}(")
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub)
                    and isinstance(node.left, ast.BinOp) and isinstance(node.left.op, ast.Mult)
                    and (_is_decay_factor(node.left.left) or _is_decay_factor(node.left.right))
                    and _mentions_eta(node.right)):
                bad.append(f"{_rel(path)}:{node.lineno} (1 − ηλ)W − ηG")
    assert not bad, "\n".join(bad)


def test_the_rule_finds_an_update_written_elsewhere():
    tree = ast.parse("w = (1 - eta * lam) * w - eta * g")
    node = tree.body[0].value
    assert _is_decay_factor(node.left.left) and _mentions_eta(node.right)


def test_every_experiment_lives_in_a_chapter_and_has_json_settings():
    found = registry.registry()
    assert {"fig2", "fig3", "fig5", "fig6", "fig6-init", "beyond-overlap", "beyond-ktasks",
            "beyond-rules", "beyond-lambda", "beyond-attention"} <= set(found)
    for name, exp in found.items():
        assert exp.module.startswith("lowrank.chapters."), name
        for scale in ("quick", "full"):
            spec = exp.spec(scale)
            assert json.loads(json.dumps(spec)) == spec, (name, scale)


def test_the_registry_keeps_no_list_of_modules():
    text = (PACKAGE / "runner" / "registry.py").read_text(encoding="utf-8")
    assert not re.search(r"lowrank\.chapters\.ch\d", text) and "EXPERIMENT_MODULES" not in text


def test_every_chapter_page_has_its_module_and_every_module_its_test():
    chapters = {p.stem for p in (PACKAGE / "chapters").glob("*.py") if p.name != "__init__.py"}
    for page in (ROOT / "book").glob("*.md"):
        m = CHAPTER_PAGE.match(page.name)
        if m:
            assert f"ch{m.group(1)}_{m.group(2)}" in chapters, page.name
    for stem in chapters:
        assert (ROOT / "tests" / "chapters" / f"test_{stem}.py").is_file(), stem


def test_tests_mirror_the_package():
    for path in (ROOT / "tests").rglob("test_*.py"):
        if path.parent == ROOT / "tests":
            continue
        module = path.parent.relative_to(ROOT / "tests") / (path.stem[len("test_"):] + ".py")
        assert (PACKAGE / module).is_file(), f"{_rel(path)} mirrors no module lowrank/{module}"
