"""lowrank: companion code for Kuzborskij & Abbasi Yadkori (2025).

A network is a list of weight tensors ``[W_1, ..., W_K]`` with ``W_k`` of shape
``(out, in)``; an ensemble of E networks is the same list with a leading
dimension, ``W_k`` of shape ``(E, out, in)``. The core imports only torch and
numpy, so experiments run on a bare GPU machine.

``lowrank.core`` is the chapter-agnostic core (models, the one trainer, losses, metrics,
merging, flows), ``lowrank.theory`` the paper's statements as functions, ``lowrank.data``
the tasks, ``lowrank.chapters`` one module per chapter of the book and ``lowrank.runner``
the experiment registry, results cache and command line.
"""

from lowrank.config import default_device as default_device
from lowrank.config import default_dtype as default_dtype
from lowrank.config import scale as scale
from lowrank.core.engine import DivergenceError as DivergenceError
from lowrank.core.engine import History as History
from lowrank.core.engine import fit as fit
from lowrank.core.engine import gd as gd
from lowrank.core.engine import sgd as sgd
from lowrank.core.merge import merge_sum as merge_sum
from lowrank.core.models import forward as forward
from lowrank.core.models import init_mlp as init_mlp
from lowrank.runner.registry import get as get
from lowrank.runner.registry import load_or_run as load_or_run
from lowrank.runner.registry import run_and_save as run_and_save

__version__ = "0.1.0"
