"""The core must import with torch and numpy only: the GPU machine has no package registry."""

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lowrank"
# figures (in the chapter modules) and the book helpers need matplotlib/seaborn at call time;
# no module may need any of these at import time.
BLOCKED = ["pandas", "matplotlib", "seaborn", "scipy", "sympy", "tqdm", "transformers",
           "safetensors", "IPython", "jupytext"]
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
    for p in PACKAGE.rglob("*.py")
    if p.name not in {"__init__.py", "__main__.py"}
)

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked for this test: ' + name)
        return None
sys.meta_path.insert(0, Block())
import importlib
for mod in {modules!r}:
    importlib.import_module('lowrank.' + mod)
import lowrank.runner.registry
print(sorted(lowrank.runner.registry.registry()))
"""


@pytest.mark.parametrize("modules", [MODULES])
def test_core_imports_without_optional_packages(modules):
    code = BLOCKER.format(blocked=set(BLOCKED), modules=modules)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fig3" in out.stdout and "fig2" in out.stdout
