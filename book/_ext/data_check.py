"""Sphinx extension: stop the build at once, with one paragraph, when Fashion-MNIST is missing.

Chapter 11 reads the Fashion-MNIST IDX files; without them the build used to execute every
chapter for minutes and then die with a traceback. At ``config-inited`` this checks the data
folder (:func:`lowrank.data.fashion_mnist.data_problem`) and raises a ``ConfigError``
carrying the paragraph that names the files, the folder or ``LOWRANK_DATA``, and the source.
"""

from __future__ import annotations

from sphinx.application import Sphinx
from sphinx.errors import ConfigError


def check_data(app: Sphinx, config) -> None:
    """Raise ConfigError with one paragraph when the files chapter 11 reads are missing."""
    from lowrank.data.fashion_mnist import data_problem

    problem = data_problem()
    if problem is not None:
        raise ConfigError(problem)


def setup(app: Sphinx) -> dict:
    """Register the check at config-inited, before any notebook runs."""
    app.connect("config-inited", check_data)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
