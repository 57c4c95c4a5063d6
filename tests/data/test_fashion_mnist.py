"""IDX files, Fashion-MNIST loading and its features."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lowrank import config
from lowrank.data import fashion_mnist
from lowrank.data.fashion_mnist import load_fashion_mnist, read_idx

CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C}
CODES.update({np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E})
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "fashion-mnist"


def idx_bytes(a: np.ndarray, dims: tuple[int, ...] | None = None, code: int | None = None) -> bytes:
    dims = a.shape if dims is None else dims
    code = CODES[a.dtype] if code is None else code
    head = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fashion_folder(tmp_path: Path, n_img: int = 3, n_lab: int = 3, gz: bool = True) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_img, 28, 28), dtype=np.uint8)
    labels = (np.arange(n_lab) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    write(tmp_path / f"t10k-images-idx3-ubyte{suffix}", idx_bytes(images), gz)
    write(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", idx_bytes(labels), gz)
    return tmp_path


def test_binary_labels_group_classes_by_hand():
    labels = fashion_mnist.binary_labels(torch.tensor([0, 4, 5, 9]))
    assert labels.tolist() == [-1.0, -1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="classes 0..9"):
        fashion_mnist.binary_labels(torch.tensor([3, 10]))


def test_image_features_scale_pool_and_unit_norm():
    img = torch.zeros(1, 2, 4, dtype=torch.uint8)
    img[0, :, :2] = 255  # left 2x2 block white, right block black
    # pixels /255 -> left block 1, pooled 2x2 -> [1, 0], unit norm -> [1, 0]
    assert fashion_mnist.image_features(img, pool=2).tolist() == [[1.0, 0.0]]
    flat = fashion_mnist.image_features(img)
    assert torch.allclose(flat.norm(dim=1), torch.ones(1, dtype=torch.float64))
    assert flat[0, 0].item() == pytest.approx(0.5)  # four pixels of 1 -> 1/sqrt(4)
    with pytest.raises(ValueError, match="pool"):
        fashion_mnist.image_features(img, pool=3)
    with pytest.raises(ValueError, match="entirely black"):
        fashion_mnist.image_features(torch.zeros(1, 2, 2))


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip_uint8_images(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write(tmp_path / "a", idx_bytes(a), gz))
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "f4", "f8"])
def test_round_trip_big_endian_dtypes(tmp_path, dtype):
    a = np.array([[-3, 1], [258, 7]], dtype=dtype) if dtype != "i1" else np.array([-3, 5], "i1")
    out = read_idx(write(tmp_path / "a", idx_bytes(a)))
    np.testing.assert_array_equal(out, a)
    assert out.dtype.isnative


def test_known_header_by_hand(tmp_path):
    # magic 0x00000801 (uint8, 1 dim), count 3, then the bytes 7 8 9
    out = read_idx(write(tmp_path / "a", bytes.fromhex("00000801 00000003 070809")))
    assert out.tolist() == [7, 8, 9]


def test_wrong_magic(tmp_path):
    data = bytearray(idx_bytes(np.zeros(3, np.uint8)))
    data[0] = 1
    with pytest.raises(ValueError, match="magic number"):
        read_idx(write(tmp_path / "a", bytes(data)))


def test_unknown_dtype_code(tmp_path):
    with pytest.raises(ValueError, match="dtype code 0x07"):
        read_idx(write(tmp_path / "a", idx_bytes(np.zeros(3, np.uint8), code=0x07)))


def test_zero_dimensions(tmp_path):
    with pytest.raises(ValueError, match="0 dimensions"):
        read_idx(write(tmp_path / "a", bytes([0, 0, 8, 0])))


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file(tmp_path, gz):
    data = idx_bytes(np.zeros((4, 5), np.uint8))[:-3]
    with pytest.raises(ValueError, match="truncated"):
        read_idx(write(tmp_path / "a", data, gz))


def test_truncated_header(tmp_path):
    with pytest.raises(ValueError, match="truncated header"):
        read_idx(write(tmp_path / "a", bytes([0, 0, 8, 3, 0, 0, 0, 1])))


def test_count_mismatch_extra_bytes(tmp_path):
    # the header says 5 items, the file holds 6: refused rather than silently cut
    data = idx_bytes(np.zeros(6, np.uint8), dims=(5,))
    with pytest.raises(ValueError, match="longer than its header says"):
        read_idx(write(tmp_path / "a", data))


def test_corrupt_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros(50, np.uint8)))[:-12]
    with pytest.raises(ValueError, match="gzip"):
        read_idx(write(tmp_path / "a", data))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="existing IDX file"):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize("gz", [False, True])
def test_load_fashion_from_folder(tmp_path, gz):
    images, labels = load_fashion_mnist(fashion_folder(tmp_path, gz=gz), "t10k")
    assert images.shape == (3, 28, 28) and labels.tolist() == [0, 1, 2]


def test_load_fashion_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRANK_DATA", str(fashion_folder(tmp_path)))
    assert load_fashion_mnist()[0].shape == (3, 28, 28)


def test_load_fashion_without_folder_says_where(tmp_path, monkeypatch):
    monkeypatch.delenv("LOWRANK_DATA", raising=False)
    monkeypatch.setattr(config, "DEFAULT_DATA_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="LOWRANK_DATA.*t10k-images-idx3-ubyte.gz"):
        load_fashion_mnist()


def test_load_fashion_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*official files"):
        load_fashion_mnist(tmp_path / "absent")


def test_load_fashion_missing_file_names_official_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(fashion_folder(tmp_path), "train")


def test_load_fashion_count_mismatch(tmp_path):
    with pytest.raises(ValueError, match="3 images but 4 labels"):
        load_fashion_mnist(fashion_folder(tmp_path, n_lab=4))


def test_load_fashion_bad_split(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        load_fashion_mnist(tmp_path, "test")


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared Fashion-MNIST subset not present")
def test_shared_subset_matches_its_readme():
    images, labels = load_fashion_mnist(SHARED, "t10k")
    assert images.shape == (4443, 28, 28) and images.dtype == np.uint8
    assert labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    counts = np.bincount(labels, minlength=10)
    assert counts.min() == 415 and counts.max() == 470
