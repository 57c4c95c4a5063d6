"""Let nbval collect the jupytext chapters (book/NN_name.md) as notebooks.

nbval 0.11 only collects ``.ipynb`` and reads them with ``nbformat.read`` inside
``IPyNbFile.collect``; we hand that call ``jupytext.read`` instead, so the text
notebooks are tested as they are, with no converted copies lying around.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from unittest import mock

import jupytext
import nbval.plugin
from nbval.plugin import IPyNbFile

CHAPTER = re.compile(r"^\d\d_.+\.md$")
_JUPYTEXT_READER = types.SimpleNamespace(
    read=lambda path, as_version=4: jupytext.read(path, as_version=as_version)
)


class JupytextNotebook(IPyNbFile):
    """An nbval notebook read from a jupytext MyST-markdown file."""

    def collect(self):
        with mock.patch.object(nbval.plugin, "nbformat", _JUPYTEXT_READER):
            return list(super().collect())


def pytest_collect_file(file_path: Path, parent):
    opt = parent.config.option
    in_book = file_path.parent.name == "book"
    if (opt.nbval or opt.nbval_lax) and in_book and CHAPTER.match(file_path.name):
        return JupytextNotebook.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(session, config, items):
    """Stop at once, with one paragraph, when chapter 11 would run without Fashion-MNIST."""
    if any(Path(str(item.fspath)).name == "11_fashion_mnist.md" for item in items):
        import pytest

        from lowrank.data.fashion_mnist import data_problem

        problem = data_problem()
        if problem is not None:
            raise pytest.UsageError(problem)
