"""Checkpoints as safetensors files: no pickle on either side, atomic replacement, sha256-verified payloads.

On disk a checkpoint is an ordinary `.safetensors` file (Hugging Face's format: an 8-byte header length,
a JSON header giving every tensor's dtype, shape and byte range, then the raw little-endian bytes; nothing
is compressed). `safetensors.numpy.load_file`, `safetensors.torch.load_file` and JAX's loaders read it
directly. The header's `__metadata__` holds one entry, "npvae", this JSON object:

    {"format": "npvae-checkpoint", "version": 3,
     "sha256": hex digest over (name, dtype, shape, C-order bytes) of every array in sorted name order,
     "meta_sha256": hex digest of the metadata as canonical JSON (sorted keys),
     "meta": the caller's metadata}

Why safetensors: the format has no code path to execute (no pickle), and the library checks every
tensor's declared byte range against the file's length before any data is read, so a file cannot
make the reader allocate more than its own size (a compressed .npz can: its members are inflated
before their size can be checked). Both digests are checked on reading, so an edited epoch, config
or Generator state is refused as surely as a flipped bit in a parameter. Only bool, integer and
float arrays are stored (what safetensors and our checkpoints need).

Checkpoints of format 2 (npvae 0.1: an uncompressed .npz with a `__meta__` member) are still read,
through npvae.store.safe_npz, which parses each member's header and refuses any member larger than the
bytes the file holds before reading it. Support for them will be removed in the next version.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping

import numpy as np

from .atomic import write_bytes
from .safe_npz import NUMERIC_KINDS, read_npz

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "read_arrays", "rng_state", "rng_from_state"]

FORMAT = "npvae-checkpoint"
VERSION = 3  # 3: safetensors; 2: .npz with the metadata covered by a digest too
LEGACY_VERSION = 2
_KEY = "npvae"  # the entry of the safetensors __metadata__ that holds the envelope
_META = "__meta__"  # the member of a format-2 .npz that holds it
_ZIP_MAGIC = b"PK\x03\x04"
_BIT_GENERATORS = {c.__name__: c for c in (np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937,
                                           np.random.Philox, np.random.SFC64)}


class CheckpointError(ValueError):
    """A checkpoint could not be written or read; the message names the file and what was wrong."""


# ---------------------------------------------------------------- saving

def save_checkpoint(path, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
    """Atomically write `arrays` (name -> bool/int/float ndarray, any shape) and JSON `meta` to `path` (safetensors)."""
    from safetensors.numpy import save

    path = os.fspath(path)
    try:
        for name, a in arrays.items():
            _check_name(name)
            if not isinstance(a, np.ndarray) or a.dtype.kind not in NUMERIC_KINDS or a.dtype.fields is not None:
                what = f"dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
                raise CheckpointError(f"array {name!r} must be a bool, integer or float numpy.ndarray, got {what}")
        if not isinstance(meta, Mapping):
            raise CheckpointError(f"meta must be a mapping, got {type(meta).__name__}")
        meta = dict(meta)
        _check_json(meta, "meta")
    except CheckpointError as e:
        raise CheckpointError(f"cannot save checkpoint {path}: {e}") from None
    # safetensors stores little-endian C-order bytes; convert first so the digest covers exactly what is read back.
    arrays = {n: a.astype(a.dtype.newbyteorder("<"), order="C", copy=False) for n, a in arrays.items()}
    envelope = {"format": FORMAT, "version": VERSION, "sha256": _digest(arrays), "meta_sha256": _meta_digest(meta), "meta": meta}
    data = save(arrays, metadata={_KEY: json.dumps(envelope)})
    write_bytes(path, data)


def _check_name(name) -> None:
    """Refuse names a safetensors header or a reader would mangle: empty, '/', '\\', NUL, the reserved metadata key."""
    if not isinstance(name, str) or not name or name == "__metadata__" or any(c in name for c in "/\\\x00"):
        raise CheckpointError(f"array name {name!r} must be a non-empty string without '/', '\\' or NUL, "
                              "and not the reserved '__metadata__'")
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


# ---------------------------------------------------------------- loading

def load_checkpoint(path, expected: Mapping[str, tuple[tuple[int, ...], np.dtype]] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict]:
    """Read and verify the checkpoint at `path`; return (name -> array, meta); `expected`: name -> (shape, dtype).

    With `expected`, names, shapes and dtypes are compared with the file's header before any data is read.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:  # a missing file stays FileNotFoundError, naming the path
        magic = f.read(4)
    if magic == _ZIP_MAGIC:
        arrays, env = _read_legacy(path, expected)
    else:
        arrays, env = _read_safetensors(path, expected)
    if _digest(arrays) != env["sha256"]:
        raise CheckpointError(f"checkpoint {path}: sha256 of the array data does not match its metadata; "
                              "the file is corrupted or was modified")
    if _meta_digest(env["meta"]) != env["meta_sha256"]:
        raise CheckpointError(f"checkpoint {path}: sha256 of the metadata (config, epoch, random states) does not match; "
                              "the file is corrupted or was modified")
    return arrays, env["meta"]


def _read_safetensors(path: str, expected) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and envelope of a format-3 file; its header is checked against `expected` before the data is decoded."""
    from safetensors.numpy import load

    with open(path, "rb") as f:
        data = f.read()  # no larger than the file: nothing in it is compressed
    try:
        header = _header(data)
        env = _parse_envelope(path, header.pop("__metadata__", {}).get(_KEY), VERSION)
        if expected is not None:
            _check_header(path, {n: (tuple(h["shape"]), h["dtype"]) for n, h in header.items()}, expected)
        arrays = load(data)  # validates every tensor's dtype and byte range against the data's length
    except CheckpointError:
        raise
    except Exception as e:  # header, dtype and size errors all mean: not a readable checkpoint
        raise CheckpointError(f"checkpoint {path}: cannot read as safetensors ({type(e).__name__}: {e})") from e
    return {n: np.array(a) for n, a in arrays.items()}, env


def _header(data: bytes) -> dict:
    """The JSON header of safetensors bytes: 8-byte little-endian length, then that many bytes of JSON."""
    n = int.from_bytes(data[:8], "little")
    if len(data) < 8 or n > len(data) - 8:
        raise ValueError(f"header length {n} is beyond the end of the file ({len(data)} bytes)")
    header = json.loads(data[8 : 8 + n])
    if not isinstance(header, dict) or not all(isinstance(h, dict) and isinstance(h.get("shape"), list)
                                               for k, h in header.items() if k != "__metadata__"):
        raise ValueError("the header is not a safetensors header")
    if not isinstance(header.get("__metadata__", {}), dict):
        raise ValueError("the header's __metadata__ is not an object")
    return header


def _check_header(path: str, header: Mapping[str, tuple], expected: Mapping) -> None:
    """safetensors' names/shapes/dtype names against name -> (shape, dtype), before the data is read."""
    names = {"bool": "BOOL", "float16": "F16", "float32": "F32", "float64": "F64"}
    want = {}
    for n, (shape, dtype) in expected.items():
        d = np.dtype(dtype)
        want[n] = (tuple(shape), names.get(d.name) or f"{d.kind.upper()}{8 * d.itemsize}")
    problems = _mismatches(header, want, lambda got: got)
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match the expected arrays: " + "; ".join(problems))


def _read_legacy(path: str, expected) -> tuple[dict[str, np.ndarray], dict]:
    """A format-2 checkpoint (.npz): members stored uncompressed and no larger than the file, as npvae 0.1 wrote them."""
    try:
        arrays = read_npz(path, text=(_META,), max_bytes=None, stored_only=True)
    except Exception as e:  # zip, .npy-header and I/O errors all mean: not a readable checkpoint
        raise CheckpointError(f"checkpoint {path}: cannot read ({type(e).__name__}: {e})") from e
    a = arrays.pop(_META, None)
    if a is None:
        raise CheckpointError(f"checkpoint {path}: no {_META!r} entry, so not an npvae checkpoint (a plain np.savez file?)")
    if a.shape not in ((), (1,)):
        raise CheckpointError(f"checkpoint {path}: {_META!r} must be a single string, got shape {a.shape}")
    env = _parse_envelope(path, str(a.reshape(-1)[0]), LEGACY_VERSION)
    if not isinstance(env.get("arrays"), dict) or env["arrays"] != {n: [x.dtype.str, list(x.shape)] for n, x in arrays.items()}:
        raise CheckpointError(f"checkpoint {path}: arrays {sorted(arrays)} do not match those recorded in "
                              f"its metadata (names, dtypes or shapes differ)")
    if expected is not None:
        check_expected(path, arrays, expected)
    return arrays, env


def _parse_envelope(path: str, text, version: int) -> dict:
    """Decode and check the envelope: a JSON object with our format tag, the version expected and its fields."""
    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path}: {what}")
    if text is None:
        raise fail(f"no {_KEY!r} metadata, so not an npvae checkpoint (a safetensors file from elsewhere?)")
    try:
        env = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise fail(f"its metadata is not valid JSON ({e})") from None
    if not isinstance(env, dict) or env.get("format") != FORMAT:
        tag = env.get("format") if isinstance(env, dict) else type(env).__name__
        raise fail(f"format tag is {tag!r}, expected {FORMAT!r}")
    if env.get("version") != version:
        raise fail(f"format version {env.get('version')!r} is not supported here (this file type holds version {version})")
    if not (isinstance(env.get("sha256"), str) and isinstance(env.get("meta_sha256"), str) and isinstance(env.get("meta"), dict)):
        raise fail("metadata lacks its 'sha256', 'meta_sha256' or 'meta' field")
    return env


def _mismatches(got: Mapping, want: Mapping, describe) -> list[str]:
    """Every difference between name -> (shape, dtype) maps, as readable phrases."""
    problems = [f"missing {n!r}" for n in sorted(want) if n not in got]
    problems += [f"unexpected {n!r}" for n in sorted(got) if n not in want]
    for n in sorted(set(want) & set(got)):
        (gs, gd), (ws, wd) = got[n], want[n]
        if tuple(gs) != tuple(ws):
            problems.append(f"{n!r} has shape {tuple(gs)}, expected {tuple(ws)}")
        if gd != wd:
            problems.append(f"{n!r} has dtype {describe(gd)}, expected {describe(wd)}")
    return problems


def check_expected(path: str, arrays: Mapping[str, np.ndarray], expected: Mapping) -> None:
    """Compare arrays against name -> (shape, dtype) and report every mismatch at once."""
    got = {n: (a.shape, a.dtype) for n, a in arrays.items()}
    want = {n: (tuple(s), np.dtype(d)) for n, (s, d) in expected.items()}
    problems = _mismatches(got, want, str)
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match the expected arrays: " + "; ".join(problems))


def read_arrays(path, *, text: tuple[str, ...] = (), max_bytes: int = 1 << 30) -> dict[str, np.ndarray]:
    """A plain `np.savez` file as name -> array, read as safely as a checkpoint: numeric arrays only (unicode
    strings for the members named in `text`), no pickle, and no member declaring more than `max_bytes` of data
    is decompressed (npvae.store.safe_npz)."""
    path = os.fspath(path)
    with open(path, "rb"):  # a missing file stays FileNotFoundError, naming the path
        pass
    try:
        return read_npz(path, text=text, max_bytes=max_bytes)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read as a pickle-free .npz ({type(e).__name__}: {e})") from e


def write_arrays(path, arrays: dict[str, np.ndarray]) -> None:
    """A plain `np.savez` file of name -> array, written whole or not at all (a temporary file renamed over path)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


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
