"""Fashion-MNIST (Xiao et al., 2017) in the official IDX format, and its features (App. D.2).

The folder is ``LOWRANK_DATA`` or the default beside the checkout (:func:`lowrank.config.data_dir`);
the files keep their official names, gzip-compressed or not.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lowrank import config

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


FASHION_FILES = {
    "images": "{split}-images-idx3-ubyte",
    "labels": "{split}-labels-idx1-ubyte",
}


FASHION_SPLITS = ("train", "t10k")
BOOK_SPLITS = ("t10k",)  # chapter 11 reads the test split only
FASHION_SOURCE = "https://github.com/zalandoresearch/fashion-mnist"


def official_names(splits=FASHION_SPLITS) -> list[str]:
    """The official gzip file names of ``splits``: train-images-idx3-ubyte.gz, ..."""
    return [FASHION_FILES[k].format(split=s) + ".gz" for s in splits for k in ("images", "labels")]


def missing_files(folder=None, splits=BOOK_SPLITS) -> list[str]:
    """The official names of the IDX files of ``splits`` absent from the data folder (raw or .gz).

    ``folder`` defaults to :func:`lowrank.config.data_dir`; the default ``splits`` are what
    the book reads (chapter 11: t10k only).
    """
    for s in splits:
        if s not in FASHION_SPLITS:
            raise ValueError(f"splits must be drawn from {FASHION_SPLITS}, got {s!r}")
    folder = Path(config.data_dir() if folder is None else folder)
    out = []
    for name in official_names(splits):
        stem = name[: -len(".gz")]
        if not ((folder / stem).is_file() or (folder / name).is_file()):
            out.append(name)
    return out


def data_problem(folder=None, splits=BOOK_SPLITS) -> str | None:
    """One paragraph saying which Fashion-MNIST files to put where, or None when all are there."""
    folder = Path(config.data_dir() if folder is None else folder)
    missing = missing_files(folder, splits)
    if not missing:
        return None
    how = ("LOWRANK_DATA is unset, so the default beside the checkout is used"
           if config.data_dir_is_default() else "the folder LOWRANK_DATA names")
    return (
        f"Fashion-MNIST is missing: chapter 11 reads {' and '.join(official_names(splits))} "
        f"(gzip or not) from {folder} ({how}), and {', '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not there. Download the official files "
        f"({', '.join(official_names())}; the book needs only the t10k pair) from "
        f"{FASHION_SOURCE} and put them, with their official names, in {folder}, or set "
        "LOWRANK_DATA to the folder that holds them (export LOWRANK_DATA=/path/to/folder)."
    )


def read_idx(path):
    """An IDX file (raw or gzip) as a numpy array of the shape its header declares.

    The header is two zero bytes, a dtype code, the number of dimensions and one
    big-endian uint32 per dimension; the file must hold exactly as many data bytes
    as those dimensions say, so a truncated or padded file is refused.
    """
    import gzip

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path must be an existing IDX file, got {str(path)!r}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip stream ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file (magic number must start with two zero bytes, "
            f"got {raw[:4].hex() or 'an empty file'})"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02X} (expected one of {known})")
    if ndim < 1:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions, expected at least 1")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, expected {header})")
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    held = len(raw) - header
    if held != expected:
        what = "truncated" if held < expected else "longer than its header says"
        raise ValueError(
            f"{path}: file is {what}: header declares dims {dims} ({expected} data bytes) "
            f"but the file holds {held} data bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _fashion_file(folder, split: str, kind: str):
    stem = FASHION_FILES[kind].format(split=split)
    for name in (stem, stem + ".gz"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {str(folder)!r}; put the official files "
        f"({FASHION_FILES['images'].format(split=split)}.gz and "
        f"{FASHION_FILES['labels'].format(split=split)}.gz from "
        "https://github.com/zalandoresearch/fashion-mnist) in that folder"
    )


def load_fashion_mnist(folder=None, split: str = "t10k"):
    """Fashion-MNIST images (n, 28, 28) uint8 and labels (n,) uint8 (Xiao et al., 2017).

    ``folder`` defaults to :func:`lowrank.config.data_dir` (``LOWRANK_DATA``, else the
    default beside the checkout); the files keep their official names, gzip-compressed or not.
    """
    if split not in FASHION_SPLITS:
        raise ValueError(f"split must be one of {FASHION_SPLITS}, got {split!r}")
    files = (
        f"{FASHION_FILES['images'].format(split=split)}.gz and "
        f"{FASHION_FILES['labels'].format(split=split)}.gz"
    )
    if folder is None:
        folder = config.data_dir()
        if config.data_dir_is_default() and not Path(folder).is_dir():
            raise FileNotFoundError(
                f"Fashion-MNIST folder {str(folder)!r} does not exist (LOWRANK_DATA is unset, so "
                f"the default beside the checkout was used); pass folder=... or set LOWRANK_DATA "
                f"to a folder holding {files} (the official file names)"
            )
    if not Path(folder).is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST folder {str(folder)!r} does not exist; create it and put the "
            f"official files {files} in it"
        )
    images = read_idx(_fashion_file(folder, split, "images"))
    labels = read_idx(_fashion_file(folder, split, "labels"))
    if images.ndim != 3 or labels.ndim != 1:
        raise ValueError(
            f"{folder}: expected images of shape (n, rows, cols) and labels (n,), got "
            f"{images.shape} and {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels in split {split!r}"
        )
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{folder}: labels must lie in 0..9, got max {int(labels.max())}")
    return images, labels


# --- features: Appendix D.2's binary task ----------------------------------------------------


def binary_labels(labels: torch.Tensor) -> torch.Tensor:
    """Appendix D.2's grouping: classes 0-4 ↦ −1, classes 5-9 ↦ +1."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or bool((labels < 0).any()) or bool((labels > 9).any()):
        raise ValueError("labels must be a 1-D array of Fashion-MNIST classes 0..9")
    return torch.where(labels >= 5, 1.0, -1.0).to(torch.float64)


def image_features(images: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """Pixels /255, optionally pool×pool average-pooled, flattened and scaled to unit norm."""
    images = torch.as_tensor(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (n, rows, cols), got {tuple(images.shape)}")
    if int(pool) != pool or pool < 1 or images.shape[1] % pool or images.shape[2] % pool:
        raise ValueError(f"pool must be a positive integer dividing {tuple(images.shape[1:])}")
    x = images.to(torch.float64) / 255.0
    if pool > 1:
        x = torch.nn.functional.avg_pool2d(x.unsqueeze(1), int(pool)).squeeze(1)
    x = x.reshape(x.shape[0], -1)
    norms = x.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("images must not be entirely black (a zero image has no direction)")
    return x / norms


def load_features(pool: int, folder: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST t10k features (unit norm) and class labels from the data folder."""
    images, labels = load_fashion_mnist(folder, "t10k")
    return image_features(torch.from_numpy(images), pool), torch.from_numpy(labels.astype("int64"))
