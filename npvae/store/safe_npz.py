"""Reading a `.npz` archive without pickle and without decompressing more than the caller allows.

`np.load(path, allow_pickle=False)` refuses object arrays, but it inflates a member before anything
can look at its size: a 4 MB archive whose `.npy` header declares 4 GiB is decompressed in full.
Here each member's `.npy` header is parsed first; its declared size (shape x itemsize) is compared
with `max_bytes` and, for members stored uncompressed, with the bytes the archive really holds, and
any dtype but numeric/bool (unicode for the members named in `text`) is refused, all before a byte
of data is read. Used by `npvae verify` (users' files) and for checkpoints of format 2 (npvae < 0.2).
"""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np

__all__ = ["NUMERIC_KINDS", "read_npz"]

NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: dtypes whose bytes are the whole value


def read_npz(path, *, text: tuple[str, ...] = (), max_bytes: int | None = 1 << 30,
             stored_only: bool = False) -> dict[str, np.ndarray]:
    """Every `.npy` member of the archive at `path` as name -> array; ValueError (or zipfile's errors) on anything else.

    stored_only: refuse compressed members, so that no member can hold more data than the file has bytes.
    """
    out = {}
    with open(os.fspath(path), "rb") as f, zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
            name = info.filename[:-4]
            if not info.filename.endswith(".npy") or name in out:
                raise ValueError(f"unexpected or duplicate zip member {info.filename!r}")
            if stored_only and info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"member {info.filename!r} is compressed; this kind of file is always stored uncompressed")
            out[name] = _read_npy(zf, info, "U" if name in text else NUMERIC_KINDS, max_bytes)
    return out


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, kinds: str, max_bytes: int | None) -> np.ndarray:
    """Parse one .npy member: header via numpy's literal parser, sizes checked, then the raw bytes; no pickle path exists."""
    with zf.open(info) as m:
        version = np.lib.format.read_magic(m)
        if version not in ((1, 0), (2, 0)):  # write_array only emits 3.0 for structured dtypes, refused anyway
            raise ValueError(f"member {info.filename!r} has unsupported .npy version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(m)
        if dtype.kind not in kinds or dtype.fields is not None:
            raise ValueError(f"member {info.filename!r} has dtype {dtype}; object (pickled), string and "
                             "structured arrays are refused without being read")
        nbytes = math.prod(shape) * dtype.itemsize
        if max_bytes is not None and nbytes > max_bytes:
            raise ValueError(f"member {info.filename!r} declares {nbytes} bytes of data, over the limit of {max_bytes}")
        if info.compress_type == zipfile.ZIP_STORED and nbytes > info.compress_size:
            raise ValueError(f"member {info.filename!r} declares {nbytes} bytes of data but holds {info.compress_size}")
        data = m.read(nbytes + 1)  # reading to the end makes zipfile check the member's CRC-32
    if len(data) != nbytes:
        raise ValueError(f"member {info.filename!r} holds {len(data)} data bytes, its header declares {nbytes}")
    a = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return a.copy(order="K")  # frombuffer views immutable bytes; callers need writable arrays
