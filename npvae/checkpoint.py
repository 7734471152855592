"""Checkpoints as plain .npz files: no pickle on either side, atomic replacement, sha256-verified payloads.

On disk a checkpoint is an ordinary zip of `.npy` members (what `np.savez` writes, readable by
`np.load(path, allow_pickle=False)`): one member per array, each numeric or bool, plus a 0-d unicode
array under `__meta__` holding this JSON object:

    {"format": "npvae-checkpoint", "version": 2,
     "arrays": {name: [dtype.str, shape], ...},   # what the file should hold, for readers and errors
     "sha256": hex digest over (name, dtype, shape, C-order bytes) of every array in sorted name order,
     "meta_sha256": hex digest of the metadata as canonical JSON (sorted keys),
     "meta": the caller's metadata}

Both digests are checked on reading, so an edited epoch, config or Generator state is refused as
surely as a flipped bit in a parameter.

We write the zip ourselves rather than through `np.savez(file, **arrays)`, whose keyword interface
cannot store arrays named `file` or `allow_pickle`; the members are byte-for-byte what savez writes.
Reading parses each `.npy` header and refuses any dtype but numeric/bool before touching the data,
so an object array is rejected without a single byte of pickle being interpreted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Mapping

import numpy as np

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "read_arrays", "rng_state", "rng_from_state"]

FORMAT = "npvae-checkpoint"
VERSION = 2  # 2: the metadata is covered by a digest too
_META = "__meta__"
_NUMERIC_KINDS = "biufc"  # bool, signed, unsigned, float, complex: dtypes whose bytes are the whole value
_BIT_GENERATORS = {c.__name__: c for c in (np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937,
                                           np.random.Philox, np.random.SFC64)}


class CheckpointError(ValueError):
    """A checkpoint could not be written or read; the message names the file and what was wrong."""


# ---------------------------------------------------------------- saving

def save_checkpoint(path, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
    """Atomically write `arrays` (name -> numeric ndarray, any shape) and JSON `meta` to the .npz at `path`."""
    path = os.fspath(path)
    try:
        for name, a in arrays.items():
            _check_name(name)
            if not isinstance(a, np.ndarray) or a.dtype.kind not in _NUMERIC_KINDS:
                what = f"dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
                raise CheckpointError(f"array {name!r} must be a numeric or bool numpy.ndarray, got {what}")
        if not isinstance(meta, Mapping):
            raise CheckpointError(f"meta must be a mapping, got {type(meta).__name__}")
        meta = dict(meta)
        _check_json(meta, "meta")
    except CheckpointError as e:
        raise CheckpointError(f"cannot save checkpoint {path}: {e}") from None
    envelope = {"format": FORMAT, "version": VERSION,
                "arrays": {n: [a.dtype.str, list(a.shape)] for n, a in sorted(arrays.items())},
                "sha256": _digest(arrays), "meta_sha256": _meta_digest(meta), "meta": meta}
    members = dict(arrays)
    members[_META] = np.array(json.dumps(envelope))  # 0-d '<U..' array: text, never an object array
    _atomic_write(path, lambda f: _write_npz(f, members))


def _check_name(name) -> None:
    """Array names become zip member names, so refuse what a zip or np.load would mangle."""
    if not isinstance(name, str) or not name or name == _META or any(c in name for c in "/\\\x00"):
        raise CheckpointError(f"array name {name!r} must be a non-empty string without '/', '\\' or NUL, "
                              f"and not the reserved {_META!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise CheckpointError(f"array name {name!r} is not valid UTF-8") from None


def _check_json(v, where: str) -> None:
    """Refuse values json would reject or silently rewrite; tuples are allowed and come back as lists."""
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{where} has key {k!r} of type {type(k).__name__}; JSON keys must be str")
            _check_json(x, f"{where}[{k!r}]")
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _check_json(x, f"{where}[{i}]")
    elif not (v is None or isinstance(v, (str, bool, int, float))):
        raise CheckpointError(f"{where} is a {type(v).__name__}, which JSON cannot store; "
                              "convert it first (int(), float(), .tolist(), rng_state(rng))")


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and C-order bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        header = json.dumps([name, a.dtype.str, list(a.shape)]).encode()
        h.update(len(header).to_bytes(8, "little") + header)  # length prefix: no two files share a stream
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))  # data length follows from the header
    return h.hexdigest()


def _meta_digest(meta: Mapping) -> str:
    """sha256 of the metadata as canonical JSON (sorted keys; floats as repr, which round-trips exactly)."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _write_npz(f, members: Mapping[str, np.ndarray]) -> None:
    """Write `members` as `<name>.npy` entries of an uncompressed zip, exactly as np.savez lays them out."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in members.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, a, allow_pickle=False)


def _atomic_write(path: str, write) -> None:
    """Run `write(file)` on a temp file beside `path`, fsync it and rename it over `path`."""
    # Same directory, so os.replace is a rename within one filesystem: readers see old or new, never half.
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: never leave a temp file or touch the old checkpoint
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Persist the rename itself; best effort, since some platforms (Windows) cannot open a directory."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# ---------------------------------------------------------------- loading

def load_checkpoint(path, expected: Mapping[str, tuple[tuple[int, ...], np.dtype]] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict]:
    """Read and verify the checkpoint at `path`; return (name -> array, meta); `expected`: name -> (shape, dtype)."""
    path = os.fspath(path)
    with open(path, "rb") as f:  # a missing file stays FileNotFoundError, naming the path
        try:
            arrays = _read_npz(f)
        except Exception as e:  # zip, .npy-header and I/O errors all mean: not a readable checkpoint
            raise CheckpointError(f"checkpoint {path}: cannot read ({type(e).__name__}: {e})") from e
    env = _parse_meta(path, arrays.pop(_META, None))
    if env["arrays"] != {n: [a.dtype.str, list(a.shape)] for n, a in arrays.items()}:
        raise CheckpointError(f"checkpoint {path}: arrays {sorted(arrays)} do not match those recorded in "
                              f"its metadata {sorted(env['arrays'])} (names, dtypes or shapes differ)")
    if _digest(arrays) != env["sha256"]:
        raise CheckpointError(f"checkpoint {path}: sha256 of the array data does not match its metadata; "
                              "the file is corrupted or was modified")
    if _meta_digest(env["meta"]) != env["meta_sha256"]:
        raise CheckpointError(f"checkpoint {path}: sha256 of the metadata (config, epoch, random states) does not match; "
                              "the file is corrupted or was modified")
    if expected is not None:
        check_expected(path, arrays, expected)
    return arrays, env["meta"]


def _read_npz(f, text: tuple[str, ...] = (_META,), max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Read every `.npy` member of the zip `f`, refusing object, string (but for `text`) and structured arrays unread."""
    out = {}
    with zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
            name = info.filename[:-4]
            if not info.filename.endswith(".npy") or name in out:
                raise ValueError(f"unexpected or duplicate zip member {info.filename!r}")
            out[name] = _read_npy(zf, info, "U" if name in text else _NUMERIC_KINDS, max_bytes)
    return out


def read_arrays(path, *, text: tuple[str, ...] = (), max_bytes: int = 1 << 30) -> dict[str, np.ndarray]:
    """A plain `np.savez` file as name -> array, read as safely as a checkpoint: numeric arrays only (unicode
    strings for the members named in `text`), no pickle, and no member declaring more than `max_bytes` of data
    is decompressed."""
    path = os.fspath(path)
    with open(path, "rb") as f:  # a missing file stays FileNotFoundError, naming the path
        try:
            return _read_npz(f, text, max_bytes)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read as a pickle-free .npz ({type(e).__name__}: {e})") from e


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, kinds: str, max_bytes: int | None = None) -> np.ndarray:
    """Parse one .npy member: header via numpy's literal parser, then raw bytes; no pickle path exists."""
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
        data = m.read(nbytes + 1)  # reading to the end makes zipfile check the member's CRC-32
    if len(data) != nbytes:
        raise ValueError(f"member {info.filename!r} holds {len(data)} data bytes, its header declares {nbytes}")
    a = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return a.copy(order="K")  # frombuffer views immutable bytes; callers need writable arrays


def _parse_meta(path: str, a: np.ndarray | None) -> dict:
    """Decode and check the `__meta__` envelope: JSON object with our format tag, version and fields."""
    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path}: {what}")
    if a is None:
        raise fail(f"no {_META!r} entry, so not an npvae checkpoint (a plain np.savez file?)")
    if a.shape not in ((), (1,)):
        raise fail(f"{_META!r} must be a single string, got shape {a.shape}")
    try:
        env = json.loads(str(a.reshape(-1)[0]))
    except (ValueError, RecursionError) as e:
        raise fail(f"{_META!r} is not valid JSON ({e})") from None
    if not isinstance(env, dict) or env.get("format") != FORMAT:
        tag = env.get("format") if isinstance(env, dict) else type(env).__name__
        raise fail(f"format tag is {tag!r}, expected {FORMAT!r}")
    if env.get("version") != VERSION:
        raise fail(f"format version {env.get('version')!r} is not supported (this npvae reads version {VERSION})")
    if not (isinstance(env.get("arrays"), dict) and isinstance(env.get("sha256"), str)
            and isinstance(env.get("meta_sha256"), str) and isinstance(env.get("meta"), dict)):
        raise fail("metadata lacks its 'arrays', 'sha256', 'meta_sha256' or 'meta' field")
    return env


def check_expected(path: str, arrays: Mapping[str, np.ndarray], expected: Mapping) -> None:
    """Compare arrays against name -> (shape, dtype) and report every mismatch at once."""
    problems = [f"missing {n!r}" for n in sorted(expected) if n not in arrays]
    problems += [f"unexpected {n!r}" for n in sorted(arrays) if n not in expected]
    for n in sorted(set(expected) & set(arrays)):
        shape, dtype = tuple(expected[n][0]), np.dtype(expected[n][1])
        if arrays[n].shape != shape:
            problems.append(f"{n!r} has shape {arrays[n].shape}, expected {shape}")
        if arrays[n].dtype != dtype:
            problems.append(f"{n!r} has dtype {arrays[n].dtype}, expected {dtype}")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match the expected arrays: " + "; ".join(problems))


# ---------------------------------------------------------------- random state

def rng_state(rng: np.random.Generator) -> dict:
    """JSON-serialisable copy of `rng.bit_generator.state` (128-bit ints stay ints, arrays become lists)."""
    if not isinstance(rng, np.random.Generator):
        raise CheckpointError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v
    return plain(rng.bit_generator.state)


def rng_from_state(state: dict) -> np.random.Generator:
    """Generator whose draws continue exactly where the one `rng_state` captured left off."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:  # an allowlist: a name from a file never selects arbitrary code
        raise CheckpointError(f"rng state names bit generator {name!r}; supported: {', '.join(_BIT_GENERATORS)}")
    bit_generator = _BIT_GENERATORS[name]()
    try:
        bit_generator.state = state  # numpy's setter validates the fields and accepts lists for arrays
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise CheckpointError(f"invalid {name} state: {type(e).__name__}: {e}") from None
    return np.random.Generator(bit_generator)
