"""npvae.store.checkpoint: exact round trips, bit-exact RNG resumption, and refusal of every damaged or hostile file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tempfile
import zipfile
import zlib

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npvae.store import checkpoint as ck
from npvae.store.checkpoint import CheckpointError, load_checkpoint, read_arrays, rng_from_state, rng_state, save_checkpoint

BIT_GENERATORS = [np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox, np.random.SFC64]


def _arrays():
    """Arrays covering every dtype family and the memory layouts a writer must treat specially."""
    rng = np.random.default_rng(0)
    return {
        "W1": rng.standard_normal((5, 3)).astype(np.float32),
        "b1": rng.standard_normal(3),
        "steps": np.arange(-4, 4, dtype=np.int64),
        "u16": np.array([0, 1, 65535], dtype=np.uint16),
        "half": np.array([1.5, -2.0], dtype=np.float16),
        "mask": np.array([True, False, True]),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4))),
        "strided": rng.standard_normal((6, 6))[::2, 1::3],
        "big_endian": np.arange(4, dtype=">f8"),
        "nan_inf": np.array([np.nan, np.inf, -np.inf, -0.0]),
        "file": np.ones(2),
        "param.encoder.0.W": np.ones((2, 2)),  # dotted names, as the trainer writes
    }


META = {"epoch": 7, "lr": 1e-3, "name": "vae ✓", "big": 2**127 + 1, "none": None, "ok": True,
        "config": {"hidden": [400, 200], "nested": {"deep": [1.5, {"x": "y"}]}}}


def _save(tmp_path, name="ck.safetensors", arrays=None, meta=None):
    path = tmp_path / name
    save_checkpoint(path, _arrays() if arrays is None else arrays, META if meta is None else meta)
    return path


def _little(a):
    """What a safetensors file holds for a: the same values, little-endian."""
    return a.astype(a.dtype.newbyteorder("<"))


def _assert_same(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for k in want:
        w = _little(want[k])
        assert got[k].dtype == w.dtype, k
        assert got[k].shape == w.shape, k
        # Bytes, not values: NaN payloads and -0.0 must survive too.
        assert np.ascontiguousarray(got[k]).tobytes() == np.ascontiguousarray(w).tobytes(), k


def _refused(path, **kw) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kw)
    assert str(path) in str(info.value)
    return str(info.value)


def _split(data: bytes) -> tuple[dict, bytes]:
    """A safetensors file's (header, data section), parsed by hand: the format is 8 bytes of length, JSON, bytes."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


def _envelope(path) -> dict:
    return json.loads(_split(path.read_bytes())[0]["__metadata__"]["npvae"])


# ---------------------------------------------------------------- round trips

def test_round_trip_is_exact(tmp_path):
    path = _save(tmp_path)
    arrays, meta = load_checkpoint(path)
    _assert_same(arrays, _arrays())
    assert meta == META
    assert all(a.flags.writeable for a in arrays.values())  # a trainer updates parameters in place


def test_file_is_plain_safetensors_that_its_library_reads(tmp_path):
    # safetensors' own loader is the independent reader: torch, JAX and the Hugging Face tools read the same file.
    path = _save(tmp_path)
    _assert_same(safetensors.numpy.load_file(str(path)), _arrays())
    env = _envelope(path)
    assert env["format"] == "npvae-checkpoint" and env["version"] == 3 and env["meta"] == META
    assert len(env["sha256"]) == 64
    assert env["meta_sha256"] == hashlib.sha256(json.dumps(META, sort_keys=True).encode()).hexdigest()
    header, _ = _split(path.read_bytes())
    assert header["W1"]["dtype"] == "F32" and header["W1"]["shape"] == [5, 3]


def test_torch_reads_it_too(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    path = _save(tmp_path, arrays={"W": np.arange(6.0).reshape(2, 3)}, meta={})
    t = safetensors.torch.load_file(str(path))["W"]
    assert t.dtype == torch.float64 and t.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_tuples_in_meta_come_back_as_lists(tmp_path):
    _, meta = load_checkpoint(_save(tmp_path, meta={"hidden": (400, 20)}))
    assert meta == {"hidden": [400, 20]}


def test_overwrite_replaces_and_leaves_no_temp_files(tmp_path):
    path = _save(tmp_path)
    save_checkpoint(path, {"a": np.arange(3)}, {"v": 2})
    arrays, meta = load_checkpoint(path)
    _assert_same(arrays, {"a": np.arange(3)})
    assert meta == {"v": 2}
    assert os.listdir(tmp_path) == ["ck.safetensors"]


def test_file_mode_follows_the_umask_like_the_runs_other_files(tmp_path):
    old = os.umask(0o022)
    try:
        path = _save(tmp_path)
        (tmp_path / "other.json").write_text("{}")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct((tmp_path / "other.json").stat().st_mode & 0o777) == "0o644"


@settings(max_examples=40, deadline=None)
@given(a=hnp.arrays(st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                              hnp.floating_dtypes()),
                    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
def test_any_numeric_array_round_trips(a):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ck")  # no suffix: the exact path must be used
        save_checkpoint(path, {"a": a}, {})
        arrays, _ = load_checkpoint(path, expected={"a": (a.shape, a.dtype)})
        assert os.listdir(d) == ["ck"]
    _assert_same(arrays, {"a": a})


# ---------------------------------------------------------------- random state

@pytest.mark.parametrize("bit_generator", BIT_GENERATORS, ids=lambda c: c.__name__)
def test_rng_resumes_bit_for_bit(tmp_path, bit_generator):
    rng = np.random.Generator(bit_generator(12345))
    rng.standard_normal(17)
    rng.integers(0, 2**32, size=3, dtype=np.uint32)  # odd count leaves a buffered half word in the state
    state = rng_state(rng)
    assert json.loads(json.dumps(state)) == state  # JSON-serialisable, big ints included
    save_checkpoint(tmp_path / "ck", {}, {"rng": state})
    _, meta = load_checkpoint(tmp_path / "ck")

    def draws(g):
        return (g.random(1000), g.standard_normal(1000), g.integers(0, 2**63, 1000),
                g.integers(0, 2**32, size=1000, dtype=np.uint32))
    want = draws(rng)
    for restored in (rng_from_state(state), rng_from_state(meta["rng"])):
        for got, ref in zip(draws(restored), want):
            assert got.tobytes() == ref.tobytes()


def test_pcg64_state_needs_128_bit_ints():
    state = rng_state(np.random.default_rng(1))
    assert state["bit_generator"] == "PCG64"
    assert state["state"]["state"] >= 2**64 or state["state"]["inc"] >= 2**64
    assert json.loads(json.dumps(state)) == state


@pytest.mark.parametrize("bad", [
    None, [], {}, {"bit_generator": "os.system"}, {"bit_generator": "RandomState"},
    {"bit_generator": "PCG64"}, {"bit_generator": "PCG64", "state": "x", "has_uint32": 0, "uinteger": 0},
    {"bit_generator": "PCG64", "state": {"state": "1", "inc": 1}, "has_uint32": 0, "uinteger": 0},
])
def test_rng_from_state_refuses_bad_states(bad):
    with pytest.raises(CheckpointError):
        rng_from_state(bad)


def test_rng_state_refuses_non_generators():
    with pytest.raises(CheckpointError):
        rng_state(np.random.RandomState(0))


# ---------------------------------------------------------------- refusals on load

def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_file(tmp_path):
    path = _save(tmp_path)
    data = path.read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        _refused(path)


@pytest.mark.parametrize("content", [b"", np.random.default_rng(0).bytes(4096),
                                     b"PK\x03\x04" + np.random.default_rng(1).bytes(200),
                                     struct.pack("<Q", 2**62) + b"{}"],
                         ids=["empty", "random", "zip-magic-then-random", "header-length-beyond-the-file"])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "ck.safetensors"
    path.write_bytes(content)
    _refused(path)


def test_safetensors_file_from_elsewhere_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file({"a": np.arange(3)}, str(path))
    assert "npvae" in _refused(path)


@pytest.mark.parametrize("text, words", [
    ("{not json", "JSON"),
    ('["a list"]', "format"),
    ('{"format": "other", "version": 3}', "format"),
    ('{"format": "npvae-checkpoint", "version": 99, "sha256": "", "meta_sha256": "", "meta": {}}', "version"),
    ('{"format": "npvae-checkpoint", "version": 2, "sha256": "", "meta_sha256": "", "meta": {}}', "version"),
    ('{"format": "npvae-checkpoint", "version": 3}', "lacks"),
    ('{"format": "npvae-checkpoint", "version": 3, "sha256": "", "meta": {}}', "lacks"),
])
def test_bad_envelope(tmp_path, text, words):
    path = tmp_path / "ck.safetensors"
    safetensors.numpy.save_file({"a": np.arange(3)}, str(path), metadata={"npvae": text})
    assert words in _refused(path)


def _flip_bit_in(data: bytes, needle: bytes) -> bytes:
    at = data.index(needle) + len(needle) // 2
    assert data.count(needle) == 1
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


def test_bit_flip_in_the_data_caught_by_sha256(tmp_path):
    a = np.linspace(0.0, 1.0, 256)
    path = _save(tmp_path, arrays={"a": a, "b": np.arange(5)}, meta={})
    path.write_bytes(_flip_bit_in(path.read_bytes(), a.tobytes()))  # nothing is compressed: bytes appear verbatim
    assert "sha256 of the array data" in _refused(path)


def test_edited_metadata_caught_by_its_sha256(tmp_path):
    """An edited epoch (header and JSON valid) is refused: the metadata has a digest of its own."""
    path = _save(tmp_path, arrays={"a": np.arange(3)}, meta={"epoch": 3, "rngs": {"eps": [1, 2]}})
    header, body = _split(path.read_bytes())
    env = json.loads(header["__metadata__"]["npvae"])
    env["meta"]["epoch"] = 4
    header["__metadata__"]["npvae"] = json.dumps(env)
    path.write_bytes(_join(header, body))
    assert "sha256 of the metadata" in _refused(path)


def test_tensor_added_or_removed_after_saving(tmp_path):
    path = _save(tmp_path, arrays={"a": np.arange(3), "b": np.ones(2)}, meta={})
    arrays, meta_text = safetensors.numpy.load_file(str(path)), _split(path.read_bytes())[0]["__metadata__"]
    safetensors.numpy.save_file({**arrays, "extra": np.zeros(2)}, str(path), metadata=meta_text)
    assert "sha256" in _refused(path)
    safetensors.numpy.save_file({"a": arrays["a"]}, str(path), metadata=meta_text)
    assert "sha256" in _refused(path)


def test_tensor_declaring_more_bytes_than_the_file_holds_is_refused_unallocated(tmp_path, monkeypatch):
    """The zip bomb's analogue: a header that claims 4 GiB of data in a small file is refused from the header alone."""
    path = _save(tmp_path, arrays={"a": np.arange(8.0)}, meta={})
    header, body = _split(path.read_bytes())
    header["a"]["shape"] = [1 << 29]
    header["a"]["data_offsets"] = [0, 8 << 29]  # 4 GiB
    path.write_bytes(_join(header, body))
    seen = []
    real = np.empty
    monkeypatch.setattr(np, "empty", lambda shape, *a, **k: seen.append(shape) or real(shape, *a, **k))
    _refused(path)
    assert path.stat().st_size < 10_000
    assert all(int(np.prod(s)) < 1 << 20 for s in seen)


def test_expected_reports_every_mismatch_before_reading_the_data(tmp_path, monkeypatch):
    path = _save(tmp_path, arrays={"W": np.zeros((2, 3), np.float32), "b": np.zeros(3), "x": np.zeros(1)}, meta={})
    ok, _ = load_checkpoint(path, expected={"W": ((2, 3), np.float32), "b": ((3,), "float64"), "x": ((1,), float)})
    assert sorted(ok) == ["W", "b", "x"]
    monkeypatch.setattr(safetensors.numpy, "load", lambda *a, **k: pytest.fail("the data were read"))
    msg = _refused(path, expected={"W": ((3, 2), np.float32), "b": ((3,), np.float32), "missing": ((1,), float)})
    for words in ["'W' has shape (2, 3), expected (3, 2)", "'b' has dtype F64, expected F32",
                  "missing 'missing'", "unexpected 'x'"]:
        assert words in msg


# ---------------------------------------------------------------- format 2 (.npz, npvae 0.1), read for one version

def _legacy(path, arrays: dict, meta: dict, savez=np.savez):
    """A format-2 checkpoint exactly as npvae 0.1 wrote it: stored .npy members and a __meta__ envelope."""
    env = {"format": "npvae-checkpoint", "version": 2,
           "arrays": {n: [a.dtype.str, list(a.shape)] for n, a in sorted(arrays.items())},
           "sha256": ck._digest(arrays), "meta_sha256": ck._meta_digest(meta), "meta": meta}
    savez(path, **arrays, __meta__=np.array(json.dumps(env)))
    return path


def test_legacy_npz_checkpoint_is_read(tmp_path):
    arrays = {"W": np.arange(6.0).reshape(2, 3), "step": np.arange(2, dtype=np.int64)}
    path = _legacy(tmp_path / "last.npz", arrays, {"epoch": 3})
    got, meta = load_checkpoint(path, expected={"W": ((2, 3), np.float64), "step": ((2,), np.int64)})
    _assert_same(got, arrays)
    assert meta == {"epoch": 3}


def test_legacy_npz_with_edited_data_is_refused(tmp_path):
    a = np.linspace(0.0, 1.0, 64)
    path = _legacy(tmp_path / "last.npz", {"a": a}, {})
    data = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["a.npy"] = _flip_bit_in(members["a.npy"], a.tobytes())
    with zipfile.ZipFile(path, "w") as zf:  # fresh CRCs: only the sha256 can notice
        for n, m in members.items():
            zf.writestr(n, m)
    assert "sha256" in _refused(path)


def _no_inflating(monkeypatch):
    monkeypatch.setattr(zlib, "decompressobj", lambda *a, **k: pytest.fail("a member was decompressed"))


def test_legacy_zip_bomb_is_refused_without_decompressing(tmp_path, monkeypatch):
    """A compressed member whose header declares 4 GiB: npvae never wrote compressed checkpoints, so it is refused unread."""
    path = tmp_path / "last.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("a.npy", "w", force_zip64=True) as m:
            np.lib.format.write_array_header_1_0(m, {"descr": "<f8", "fortran_order": False, "shape": (1 << 29,)})
            zero = bytes(1 << 20)
            for _ in range(64):  # 64 MiB of zeros that deflate to ~64 kB: enough to show the principle
                m.write(zero)
    assert path.stat().st_size < 1 << 20
    _no_inflating(monkeypatch)
    assert "compressed" in _refused(path)


def test_legacy_stored_member_declaring_more_than_it_holds_is_refused(tmp_path):
    path = tmp_path / "last.npz"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (1 << 29,)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.npy", buf.getvalue() + bytes(64))
    assert "declares" in _refused(path)


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_legacy_pickled_object_array_is_refused_unexecuted(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "last.npz"
    np.savez(path, a=np.array([_Hostile(str(marker))], dtype=object), __meta__=np.array("{}"))
    assert "object" in _refused(path)
    assert not marker.exists()
    with np.load(path, allow_pickle=True) as npz:  # the file really is armed: numpy with pickle enabled runs it
        npz["a"]
    assert marker.exists()


def _count_inflated(monkeypatch) -> list[int]:
    """Make zlib tally every byte it inflates (the header of a compressed member has to be)."""
    counts, real = [], zlib.decompressobj

    class Counting:
        def __init__(self, *a, **k):
            self.d = real(*a, **k)

        def decompress(self, data, *a):
            out = self.d.decompress(data, *a)
            counts.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self.d, name)
    monkeypatch.setattr(zlib, "decompressobj", Counting)
    return counts


def test_read_arrays_refuses_a_compressed_bomb_before_inflating(tmp_path, monkeypatch):
    """npvae verify reads users' .npz files (np.savez_compressed included): the declared size is capped first."""
    path = tmp_path / "case.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as m:
            np.lib.format.write_array_header_1_0(m, {"descr": "<f8", "fortran_order": False, "shape": (1 << 29,)})
            m.write(bytes(1 << 16))
    inflated = _count_inflated(monkeypatch)
    with pytest.raises(CheckpointError, match="declares 4294967296 bytes"):
        read_arrays(path)
    assert 0 < sum(inflated) < 1 << 20  # the .npy header, read through the stream, and not the data


def test_read_arrays_reads_savez_compressed(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", x=np.arange(5.0), options=np.array('{"a": 1}'))
    got = read_arrays(tmp_path / "c.npz", text=("options",))
    assert got["x"].tolist() == [0, 1, 2, 3, 4] and str(got["options"]) == '{"a": 1}'


# ---------------------------------------------------------------- atomicity

@pytest.mark.parametrize("where", ["fsync", "rename"])
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, where):
    path = _save(tmp_path)
    before = path.read_bytes()
    fail = lambda *a: (_ for _ in ()).throw(RuntimeError("disk on fire"))
    monkeypatch.setattr(os, "fsync" if where == "fsync" else "replace", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_checkpoint(path, {"a": np.ones(1000), "b": np.ones(1000)}, {"v": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.safetensors"]
    monkeypatch.undo()
    _assert_same(load_checkpoint(path)[0], _arrays())


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda *a: (_ for _ in ()).throw(RuntimeError("disk on fire")))
    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / "ck.safetensors", {"a": np.ones(3), "b": np.ones(3)}, {})
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- refusals on save

@pytest.mark.parametrize("arrays", [
    {"a": np.array([object()], dtype=object)},
    {"a": np.array(["text"])},
    {"a": np.zeros(2, dtype=[("x", "f4"), ("y", "i4")])},
    {"a": np.array(["2024-01-01"], dtype="datetime64[D]")},
    {"a": np.array([1 + 2j])},
    {"a": [1.0, 2.0]},
    {"": np.ones(1)}, {"a/b": np.ones(1)}, {"a\\b": np.ones(1)}, {"a\x00": np.ones(1)},
    {"__metadata__": np.ones(1)}, {1: np.ones(1)}, {"\ud800": np.ones(1)},
], ids=lambda a: repr(next(iter(a)))[:12] + "-" + type(next(iter(a.values()))).__name__)
def test_save_refuses_bad_arrays_and_names(tmp_path, arrays):
    with pytest.raises(CheckpointError, match="ck.safetensors"):
        save_checkpoint(tmp_path / "ck.safetensors", arrays, {})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("meta", [
    {"epoch": np.int64(3)}, {"x": np.zeros(2)}, {1: "int key"}, {"s": {1, 2}}, {"n": {"deep": [b"bytes"]}}, [("a", 1)],
])
def test_save_refuses_meta_json_cannot_hold(tmp_path, meta):
    with pytest.raises(CheckpointError, match="ck.safetensors"):
        save_checkpoint(tmp_path / "ck.safetensors", {"a": np.ones(1)}, meta)
    assert os.listdir(tmp_path) == []
