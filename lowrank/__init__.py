"""lowrank: companion code for Kuzborskij & Abbasi Yadkori (2025).

A network is a list of weight tensors ``[W_1, ..., W_K]`` with ``W_k`` of shape
``(out, in)``; an ensemble of E networks is the same list with a leading
dimension, ``W_k`` of shape ``(E, out, in)``. The core imports only torch and
numpy, so experiments run on a bare GPU machine.
"""

from lowrank.config import default_device, default_dtype, scale

__all__ = ["default_device", "default_dtype", "scale"]
__version__ = "0.1.0"
