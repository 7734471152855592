"""Reading the data files: Larochelle & Murray's binarised MNIST (.npz bit-packed, or .amat text) and IDX files.

Each reader checks the format and returns uint8 arrays; npvae.store.data turns them into a Dataset. Private to npvae.store.data.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid", "test")

# split -> (rows, sha256 of the unpacked (rows, 784) uint8 array's bytes in C order), from
# the unpacked arrays of the Larochelle & Murray 2011 static binarisation (the .amat files of its authors' page).
BINARIZED_MNIST_SHA256 = {
    "train": (50_000, "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a"),
    "valid": (10_000, "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e"),
    "test": (10_000, "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86"),
}

def _parse_amat(path: Path) -> np.ndarray:
    """(N, 784) uint8 from a Larochelle & Murray .amat file (one image a line, 784 space-separated 0/1); format checks only."""
    path = Path(path)
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    kind = np.full(256, 4, dtype=np.uint8)  # byte -> 0 '0', 1 '1', 2 newline, 3 other space, 4 invalid
    kind[[ord("0"), ord("1"), ord("\n"), ord(" "), ord("\t"), ord("\r")]] = [0, 1, 2, 3, 3, 3]
    k = kind[raw]
    if np.any(k == 4):
        bad = bytes([int(raw[np.argmax(k == 4)])])
        raise ValueError(f"{path}: unexpected byte {bad!r}; an .amat file holds only 0, 1, spaces and newlines")
    digit = k < 2
    if np.any(digit[1:] & digit[:-1]):
        raise ValueError(f"{path}: values run together; each value must be a single 0 or 1 between spaces")
    kept = k[k < 3]  # digits and newlines only
    newlines = np.flatnonzero(kept == 2)
    lengths = np.diff(np.concatenate(([-1], newlines, [kept.size]))) - 1  # values on each line
    lengths = lengths[lengths > 0]  # blank lines (the trailing one included) carry nothing
    if lengths.size == 0 or np.any(lengths != 784):
        odd = sorted(set(lengths.tolist()) - {784})[:5]
        raise ValueError(f"{path}: every line must hold 784 values; found lines with {odd or 'none at all'}")
    return kept[kept < 2].reshape(-1, 784)


def _read_binarized_npz(path: Path) -> dict[str, np.ndarray]:
    """{'train', 'valid', 'test'}: (N, 784) uint8 from bit-packed arrays (N, 98) uint8 in an .npz."""
    try:
        with np.load(path, allow_pickle=False) as f:
            packed = {s: f[s] for s in SPLITS if s in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz archive: {e}") from e
    out = {}
    for s in SPLITS:
        a = packed.get(s)
        if a is None:
            raise ValueError(f"{path}: has no array named {s!r}; expected 'train', 'valid' and 'test'")
        if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != 98:
            raise ValueError(f"{path}: {s} must be bit-packed uint8 of shape (N, 98), got {a.dtype} {a.shape}")
        # The file's arrays are Fortran-ordered: make the packed copy C-ordered (6 MB) so that the unpacked (N, 784) one
        # is, without a second full-size copy; rows are what the batches gather.
        out[s] = np.unpackbits(np.ascontiguousarray(a), axis=1)[:, :784]
    return out


def _check_binarized(split: str, a: np.ndarray, path: Path) -> None:
    """Check (rows, 784) and the SHA-256 of the README table; 0/1 values follow from how `a` was parsed."""
    rows, digest = BINARIZED_MNIST_SHA256[split]
    if a.shape != (rows, 784):
        raise ValueError(f"{path}: {split} has shape {a.shape}, expected ({rows}, 784)")
    got = hashlib.sha256(np.ascontiguousarray(a, dtype=np.uint8).data).hexdigest()
    if got != digest:
        raise ValueError(f"{path}: the {split} split's sha256 is {got}, expected {digest}: "
                         f"the file is damaged or holds a different binarisation")


# IDX type byte -> element type (LeCun et al., "THE MNIST DATABASE", file format section)
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Parse an IDX file (gzipped when named *.gz): bytes 0 0 TYPE NDIM, NDIM big-endian uint32 sizes, then the data."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # EOFError: the gzip stream is cut short
        raise ValueError(f"{path}: damaged gzip file: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file: magic number 0x{data[:4].hex()}, expected 0x0000TTNN "
                         f"with type TT in {', '.join(f'{t:02x}' for t in _IDX_TYPES)} (0x00000803 for images)")
    ndim, header = data[3], 4 + 4 * data[3]
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header: {ndim} sizes need {header} bytes, file has {len(data)}")
    dims = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    item = np.dtype(_IDX_TYPES[data[2]])
    need = math.prod(dims) * item.itemsize
    if len(data) - header != need:
        what = "truncated" if len(data) - header < need else "has trailing bytes"
        raise ValueError(f"{path}: {what}: sizes {dims} of {item} need {need} data bytes, found {len(data) - header}")
    return np.frombuffer(data, dtype=item, offset=header).reshape(dims).astype(item.newbyteorder("="), copy=False)


def _read_idx_pair(images_path: Path, labels_path: Path, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 in 0..9; checks the types, sizes and that the counts agree."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: expected uint8 images of size (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected uint8 labels of size (N,), got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{labels_path}: {labels.shape[0]} labels, but {Path(images_path).name} "
                         f"holds {images.shape[0]} images")
    if count is not None and images.shape[0] != count:
        raise ValueError(f"{images_path}: expected {count} images, found {images.shape[0]}")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must be 0..9, found {labels.max()}")
    return images, labels.astype(np.int64)
