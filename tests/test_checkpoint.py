"""npvae.checkpoint: exact round trips, bit-exact RNG resumption, and refusal of every damaged or hostile file."""

from __future__ import annotations

import io
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npvae.checkpoint import CheckpointError, load_checkpoint, rng_from_state, rng_state, save_checkpoint

BIT_GENERATORS = [np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox, np.random.SFC64]


def _arrays():
    """Arrays covering every dtype family and the memory layouts np.save treats specially."""
    rng = np.random.default_rng(0)
    return {
        "W1": rng.standard_normal((5, 3)).astype(np.float32),
        "b1": rng.standard_normal(3),
        "steps": np.arange(-4, 4, dtype=np.int64),
        "u16": np.array([0, 1, 65535], dtype=np.uint16),
        "mask": np.array([True, False, True]),
        "z": np.array([1 + 2j, -0.5j]),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4))),
        "strided": rng.standard_normal((6, 6))[::2, 1::3],
        "big_endian": np.arange(4, dtype=">f8"),
        "nan_inf": np.array([np.nan, np.inf, -np.inf, -0.0]),
        "file": np.ones(2),          # names np.savez(**kw) cannot take
        "allow_pickle": np.ones(1),
    }


META = {"epoch": 7, "lr": 1e-3, "name": "vae ✓", "big": 2**127 + 1, "none": None, "ok": True,
        "config": {"hidden": [400, 200], "nested": {"deep": [1.5, {"x": "y"}]}}}


def _save(tmp_path, name="ck.npz", arrays=None, meta=None):
    path = tmp_path / name
    save_checkpoint(path, _arrays() if arrays is None else arrays, META if meta is None else meta)
    return path


def _assert_same(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        # Bytes, not values: NaN payloads and -0.0 must survive too.
        assert np.ascontiguousarray(got[k]).tobytes() == np.ascontiguousarray(want[k]).tobytes(), k


def _refused(path, **kw) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kw)
    assert str(path) in str(info.value)
    return str(info.value)


def _raw_npz(path, members: dict[str, bytes]):
    """Write a zip of raw members (fresh CRCs), to forge files the zip layer itself accepts."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npy_bytes(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


# ---------------------------------------------------------------- round trips

def test_round_trip_is_exact(tmp_path):
    path = _save(tmp_path)
    arrays, meta = load_checkpoint(path)
    _assert_same(arrays, _arrays())
    assert meta == META
    assert all(a.flags.writeable for a in arrays.values())  # a trainer updates parameters in place


def test_file_is_a_plain_npz_numpy_can_read(tmp_path):
    # np.load is the independent reader: the format is standard .npz, no pickle needed.
    path = _save(tmp_path)
    with np.load(path, allow_pickle=False) as npz:
        env = json.loads(str(npz["__meta__"]))
        _assert_same({k: npz[k] for k in npz.files if k != "__meta__"}, _arrays())
    assert env["format"] == "npvae-checkpoint" and env["version"] == 2 and env["meta"] == META
    assert len(env["sha256"]) == 64
    assert env["meta_sha256"] == hashlib.sha256(json.dumps(META, sort_keys=True).encode()).hexdigest()
    assert env["arrays"]["W1"] == ["<f4", [5, 3]]


def test_tuples_in_meta_come_back_as_lists(tmp_path):
    _, meta = load_checkpoint(_save(tmp_path, meta={"hidden": (400, 20)}))
    assert meta == {"hidden": [400, 20]}


def test_overwrite_replaces_and_leaves_no_temp_files(tmp_path):
    path = _save(tmp_path)
    save_checkpoint(path, {"a": np.arange(3)}, {"v": 2})
    arrays, meta = load_checkpoint(path)
    _assert_same(arrays, {"a": np.arange(3)})
    assert meta == {"v": 2}
    assert os.listdir(tmp_path) == ["ck.npz"]


@settings(max_examples=40, deadline=None)
@given(a=hnp.arrays(st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                              hnp.floating_dtypes(), hnp.complex_number_dtypes()),
                    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
def test_any_numeric_array_round_trips(a):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ck")  # no .npz suffix: the exact path must be used
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
    save_checkpoint(tmp_path / "ck.npz", {}, {"rng": state})
    _, meta = load_checkpoint(tmp_path / "ck.npz")

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
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_checkpoint(tmp_path / "nope.npz")


def test_truncated_file(tmp_path):
    path = _save(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(path)


@pytest.mark.parametrize("content", [b"", np.random.default_rng(0).bytes(4096),
                                     b"PK\x03\x04" + np.random.default_rng(1).bytes(200)],
                         ids=["empty", "random", "zip-magic-then-random"])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "ck.npz"
    path.write_bytes(content)
    _refused(path)


def test_npy_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "ck.npz"
    with open(path, "wb") as f:
        np.save(f, np.arange(3))
    _refused(path)


def test_plain_npz_without_meta(tmp_path):
    path = tmp_path / "ck.npz"
    np.savez(path, a=np.arange(3))
    assert "__meta__" in _refused(path)


@pytest.mark.parametrize("text, words", [
    ("{not json", "JSON"),
    ('["a list"]', "format"),
    ('{"format": "other", "version": 1}', "format"),
    ('{"format": "npvae-checkpoint", "version": 99, "arrays": {}, "sha256": "", "meta": {}}', "version"),
    ('{"format": "npvae-checkpoint", "version": 2}', "lacks"),
    ('{"format": "npvae-checkpoint", "version": 2, "arrays": {}, "sha256": "", "meta": {}}', "lacks"),
])
def test_bad_metadata(tmp_path, text, words):
    path = tmp_path / "ck.npz"
    np.savez(path, a=np.arange(3), __meta__=np.array(text))
    assert words in _refused(path)


def test_meta_that_is_not_a_string_array(tmp_path):
    path = tmp_path / "ck.npz"
    np.savez(path, __meta__=np.arange(3))
    _refused(path)


def _flip_bit_in(data: bytes, needle: bytes) -> bytes:
    at = data.index(needle) + len(needle) // 2
    assert data.count(needle) == 1
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


def test_bit_flip_caught_by_zip_crc(tmp_path):
    a = np.linspace(0.0, 1.0, 256)
    path = _save(tmp_path, arrays={"a": a}, meta={})
    path.write_bytes(_flip_bit_in(path.read_bytes(), a.tobytes()))  # stored, not deflated: bytes appear verbatim
    assert "CRC" in _refused(path)


def test_bit_flip_with_valid_crc_caught_by_sha256(tmp_path):
    # Rebuild the zip around the flipped byte so every CRC is right; only the stored sha256 can notice.
    a = np.linspace(0.0, 1.0, 256)
    path = _save(tmp_path, arrays={"a": a, "b": np.arange(5)}, meta={})
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["a.npy"] = _flip_bit_in(members["a.npy"], a.tobytes())
    _raw_npz(path, members)
    assert "sha256" in _refused(path)


def test_edited_metadata_caught_by_its_sha256(tmp_path):
    """An edited epoch (arrays, CRCs and JSON all valid) is refused: the metadata has a digest of its own."""
    path = _save(tmp_path, arrays={"a": np.arange(3)}, meta={"epoch": 3, "rngs": {"eps": [1, 2]}})
    with zipfile.ZipFile(path) as zf:
        env = json.loads(str(np.load(path, allow_pickle=False)["__meta__"]))
        members = {n: zf.read(n) for n in zf.namelist()}
    env["meta"]["epoch"] = 4
    members["__meta__.npy"] = _npy_bytes(np.array(json.dumps(env)))
    _raw_npz(path, members)
    assert "sha256 of the metadata" in _refused(path)


def test_member_added_or_removed_after_saving(tmp_path):
    path = _save(tmp_path, arrays={"a": np.arange(3)}, meta={})
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    _raw_npz(path, {**members, "extra.npy": _npy_bytes(np.zeros(2))})
    _refused(path)
    _raw_npz(path, {"__meta__.npy": members["__meta__.npy"]})
    _refused(path)


def test_non_npy_and_duplicate_members(tmp_path):
    path = _save(tmp_path, arrays={"a": np.arange(3)}, meta={})
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    _raw_npz(path, {**members, "notes.txt": b"hello"})
    _refused(path)
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
        with pytest.warns(UserWarning, match="Duplicate"):
            zf.writestr("a.npy", _npy_bytes(np.arange(3) + 1))
    _refused(path)


def _plant_marker(path):
    """What a hostile pickle would run on load: its only effect is to create `path`."""
    with open(path, "w") as f:
        f.write("code ran")
    return 0


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_plant_marker, (self.marker,))


@pytest.mark.parametrize("with_meta", [False, True])
def test_pickled_object_array_is_refused_unexecuted(tmp_path, with_meta):
    marker = tmp_path / "marker"
    path = tmp_path / "ck.npz"
    extra = {"__meta__": np.array(json.dumps({"format": "npvae-checkpoint", "version": 1}))} if with_meta else {}
    np.savez(path, a=np.array([_Hostile(str(marker))], dtype=object), **extra)
    assert "object" in _refused(path)
    assert not marker.exists()
    # The file really is armed: numpy with pickle enabled runs the payload.
    with np.load(path, allow_pickle=True) as npz:
        npz["a"]
    assert marker.exists()


def test_expected_reports_every_mismatch(tmp_path):
    path = _save(tmp_path, arrays={"W": np.zeros((2, 3), np.float32), "b": np.zeros(3), "x": np.zeros(1)}, meta={})
    ok, _ = load_checkpoint(path, expected={"W": ((2, 3), np.float32), "b": ((3,), "float64"), "x": ((1,), float)})
    assert sorted(ok) == ["W", "b", "x"]
    msg = _refused(path, expected={"W": ((3, 2), np.float32), "b": ((3,), np.float32), "missing": ((1,), float)})
    for words in ["'W' has shape (2, 3), expected (3, 2)", "'b' has dtype float64, expected float32",
                  "missing 'missing'", "unexpected 'x'"]:
        assert words in msg


# ---------------------------------------------------------------- atomicity

def _fail_after_first(monkeypatch, module, attr):
    real = getattr(module, attr)
    calls = []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("disk on fire")
        return real(*args, **kw)
    monkeypatch.setattr(module, attr, flaky)


@pytest.mark.parametrize("where", ["mid-write", "rename"])
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, where):
    path = _save(tmp_path)
    before = path.read_bytes()
    if where == "mid-write":  # the first array reaches the temp file, the second one fails
        _fail_after_first(monkeypatch, np.lib.format, "write_array")
    else:
        monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(RuntimeError("disk on fire")))
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_checkpoint(path, {"a": np.ones(1000), "b": np.ones(1000)}, {"v": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.npz"]
    monkeypatch.undo()
    _assert_same(load_checkpoint(path)[0], _arrays())


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    _fail_after_first(monkeypatch, np.lib.format, "write_array")
    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / "ck.npz", {"a": np.ones(3), "b": np.ones(3)}, {})
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- refusals on save

@pytest.mark.parametrize("arrays", [
    {"a": np.array([object()], dtype=object)},
    {"a": np.array(["text"])},
    {"a": np.zeros(2, dtype=[("x", "f4"), ("y", "i4")])},
    {"a": np.array(["2024-01-01"], dtype="datetime64[D]")},
    {"a": [1.0, 2.0]},
    {"": np.ones(1)}, {"a/b": np.ones(1)}, {"a\\b": np.ones(1)}, {"a\x00": np.ones(1)},
    {"__meta__": np.ones(1)}, {1: np.ones(1)}, {"\ud800": np.ones(1)},
], ids=lambda a: repr(next(iter(a)))[:12] + "-" + type(next(iter(a.values()))).__name__)
def test_save_refuses_bad_arrays_and_names(tmp_path, arrays):
    with pytest.raises(CheckpointError, match="ck.npz"):
        save_checkpoint(tmp_path / "ck.npz", arrays, {})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("meta", [
    {"epoch": np.int64(3)}, {"x": np.zeros(2)}, {1: "int key"}, {"s": {1, 2}}, {"n": {"deep": [b"bytes"]}}, [("a", 1)],
])
def test_save_refuses_meta_json_cannot_hold(tmp_path, meta):
    with pytest.raises(CheckpointError, match="ck.npz"):
        save_checkpoint(tmp_path / "ck.npz", {"a": np.ones(1)}, meta)
    assert os.listdir(tmp_path) == []
