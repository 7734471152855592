"""Tests for npvae.store.data: loaders, file parsers, search/missing-file messages, dynamic binarisation, downloads.

Nothing here touches the network: downloads go to file:// URLs. The real binarized MNIST and the
Debian Fashion-MNIST files are used when present and the tests that need them skip otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from conftest import SHARED_DATA
from npvae.store import _download, data
from npvae.store.data import DATASETS, Dataset, binarize_dynamic, default_cache_dir, default_search_dirs, load

REPO = Path(__file__).resolve().parents[1]
SHARED = SHARED_DATA if (SHARED_DATA / "binarized_mnist.npz").is_file() else None
needs_bmnist = pytest.mark.skipif(SHARED is None, reason="binarized_mnist.npz not found (set NPVAE_DATA_DIR)")
FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
                                   reason="Debian package dataset-fashion-mnist not installed")

# The published table of the static binarisation: rows, mean pixel (6 decimals), sha256 of the unpacked uint8 bytes.
README = {
    "train": (50_000, 0.130562, "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a"),
    "valid": (10_000, 0.131127, "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e"),
    "test": (10_000, 0.132512, "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86"),
}


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def idx_bytes(type_code: int, dims: tuple, payload: bytes) -> bytes:
    """An IDX file written by hand: 0 0 type ndim, big-endian uint32 sizes, payload."""
    return bytes([0, 0, type_code, len(dims)]) + b"".join(n.to_bytes(4, "big") for n in dims) + payload


def amat_text(a: np.ndarray, newline: str = "\n") -> str:
    return "".join(" ".join(str(int(v)) for v in row) + newline for row in a)


# ---- digits -------------------------------------------------------------------------------------

def test_digits_shapes_range_and_labels():
    ds = load("digits")
    assert (ds.train.shape, ds.valid.shape, ds.test.shape) == ((1297, 64), (250, 64), (250, 64))
    assert ds.image_shape == (8, 8) and ds.binary and not ds.dynamic_binarize and ds.truth is None
    for s in ("train", "valid", "test"):
        x, y = ds.split(s), getattr(ds, f"{s}_labels")
        assert x.dtype == np.float64 and set(np.unique(x)) <= {0.0, 1.0}
        assert y.shape == (len(x),) and y.min() >= 0 and y.max() <= 9
    assert load("digits", dtype=np.float32).train.dtype == np.float32


def test_digits_split_is_the_documented_permutation_and_a_partition():
    bunch = load_digits()
    x, y = (bunch.data / 16.0 >= 0.5).astype(np.float64), bunch.target
    perm = np.random.default_rng(7).permutation(1797)
    ds = load("digits", seed=7)
    np.testing.assert_array_equal(ds.train, x[perm[:1297]])
    np.testing.assert_array_equal(ds.valid_labels, y[perm[1297:1547]])
    np.testing.assert_array_equal(ds.test, x[perm[1547:]])
    # the three splits together are the whole set, each image once (rows compared as a multiset)
    rows = lambda a: sorted(map(bytes, a.astype(np.uint8)))  # noqa: E731
    joined = np.hstack([np.vstack([ds.train, ds.valid, ds.test]),
                        np.concatenate([ds.train_labels, ds.valid_labels, ds.test_labels])[:, None]])
    assert rows(joined) == rows(np.hstack([x, y[:, None]]))


def test_digits_split_determinism_by_seed():
    a, b, c = load("digits", seed=1), load("digits", seed=1), load("digits", seed=2)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    assert not np.array_equal(a.train, c.train)


# ---- public-boundary checks ---------------------------------------------------------------------

def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="digits.*binarized-mnist.*mnist.*fashion-mnist.*synthetic"):
        load("cifar10")
    with pytest.raises(ValueError, match="float32 or float64"):
        load("digits", dtype=np.int32)
    with pytest.raises(ValueError, match="seed"):
        load("digits", seed=-1)
    with pytest.raises(ValueError, match="cache_dir"):
        load("mnist", download=True)
    with pytest.raises(ValueError, match="'train', 'valid', 'test'"):
        load("digits").split("training")


def test_dataset_checks_its_fields():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match="shape"):
        Dataset("t", x, x, np.zeros((3, 5)), image_shape=(2, 2), binary=True)
    with pytest.raises(ValueError, match="binary"):
        Dataset("t", x + 0.5, x, x, image_shape=(2, 2), binary=True)
    with pytest.raises(ValueError, match="dtype"):
        Dataset("t", x, x.astype(np.float32), x, image_shape=(2, 2), binary=False)
    assert Dataset("t", x, x, x, image_shape=(2, 2), binary=True).split("valid") is x


# ---- binarized MNIST ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bmnist():
    return load("binarized-mnist", search_dirs=[SHARED])


@needs_bmnist
def test_binarized_mnist_real_file_matches_readme(bmnist):
    assert bmnist.binary and bmnist.image_shape == (28, 28) and bmnist.train_labels is None
    for s, (rows, mean, digest) in README.items():
        x = bmnist.split(s)
        assert x.shape == (rows, 784) and x.dtype == np.float64
        assert abs(x.mean() - mean) <= 5e-7
        assert sha256(x.astype(np.uint8).tobytes()) == digest


def test_files_are_looked_for_in_a_name_subdirectory_first(tmp_path):
    for d in (tmp_path, tmp_path / "binarized-mnist"):
        d.mkdir(exist_ok=True)
        np.savez(d / "binarized_mnist.npz", **{s: np.zeros((1, 98), np.uint8) for s in ("train", "valid", "test")})
    with pytest.raises(ValueError, match=r"binarized-mnist/binarized_mnist.npz: train has shape \(1, 784\)"):
        load("binarized-mnist", search_dirs=[tmp_path / "empty", tmp_path])


@needs_bmnist
def test_amat_round_trip_of_the_real_valid_split(tmp_path, bmnist):
    a = bmnist.valid.astype(np.uint8)
    text = np.full((len(a), 2 * 784), ord(" "), dtype=np.uint8)  # "v v v ... v\n", written fast
    text[:, 0::2], text[:, -1] = a + ord("0"), ord("\n")
    (tmp_path / "v.amat").write_bytes(text.tobytes())
    parsed = data._parse_amat(tmp_path / "v.amat")
    np.testing.assert_array_equal(parsed, a)
    data._check_binarized("valid", parsed, tmp_path / "v.amat")  # passes: same sha256 as the README


def test_amat_parser_on_a_tiny_file(tmp_path):
    a = np.random.default_rng(0).integers(0, 2, size=(3, 784), dtype=np.uint8)
    (tmp_path / "a.amat").write_text(amat_text(a))
    np.testing.assert_array_equal(data._parse_amat(tmp_path / "a.amat"), a)
    (tmp_path / "crlf.amat").write_bytes(amat_text(a, "\r\n").encode() + b"\n")  # CRLF and a blank line
    np.testing.assert_array_equal(data._parse_amat(tmp_path / "crlf.amat"), a)


@pytest.mark.parametrize("text, message", [
    ("0 " * 783 + "1\n" + "0 " * 782 + "1\n", "783"),
    ("0 " * 783 + "2\n", "unexpected byte"),
    ("0 " * 782 + "01\n", "run together"),
    ("", "784 values"),
])
def test_amat_parser_rejects_bad_files(tmp_path, text, message):
    (tmp_path / "bad.amat").write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        data._parse_amat(tmp_path / "bad.amat")
    assert "bad.amat" in str(e.value)


def test_binarized_loader_checks_shape_of_amat_files(tmp_path):
    a = np.ones((2, 784), dtype=np.uint8)
    for s in ("train", "valid", "test"):
        (tmp_path / f"binarized_mnist_{s}.amat").write_text(amat_text(a))
    with pytest.raises(ValueError, match=r"binarized_mnist_train.amat: train has shape \(2, 784\), expected \(50000, 784\)"):
        load("binarized-mnist", search_dirs=[tmp_path])


def test_binarized_loader_rejects_damaged_npz(tmp_path):
    np.savez(tmp_path / "binarized_mnist.npz", train=np.zeros((2, 98), np.uint8), valid=np.zeros((2, 98), np.uint8))
    with pytest.raises(ValueError, match="binarized_mnist.npz: has no array named 'test'"):
        load("binarized-mnist", search_dirs=[tmp_path])
    good = (tmp_path / "binarized_mnist.npz").read_bytes()
    (tmp_path / "binarized_mnist.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="binarized_mnist.npz: not a readable .npz"):
        load("binarized-mnist", search_dirs=[tmp_path])


# ---- IDX (MNIST, Fashion-MNIST) -----------------------------------------------------------------

@pytest.fixture
def tiny_idx(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    (tmp_path / "img").write_bytes(idx_bytes(0x08, (3, 28, 28), images.tobytes()))
    (tmp_path / "lab.gz").write_bytes(gzip.compress(idx_bytes(0x08, (3,), labels.tobytes())))
    return tmp_path, images, labels


def test_idx_parser_reads_plain_and_gzipped_files(tiny_idx):
    d, images, labels = tiny_idx
    np.testing.assert_array_equal(data.read_idx(d / "img"), images)
    np.testing.assert_array_equal(data.read_idx(d / "lab.gz"), labels)
    x, y = data._read_idx_pair(d / "img", d / "lab.gz")
    assert y.dtype == np.int64 and y.tolist() == [7, 0, 9] and x.shape == (3, 28, 28)


def test_idx_parser_is_big_endian(tmp_path):
    (tmp_path / "i4").write_bytes(idx_bytes(0x0C, (2,), (1).to_bytes(4, "big") + (258).to_bytes(4, "big", signed=True)))
    assert data.read_idx(tmp_path / "i4").tolist() == [1, 258]


@pytest.mark.parametrize("blob, message", [
    (b"\x00\x01\x08\x01" + (3).to_bytes(4, "big") + b"abc", "magic number 0x00010801"),
    (b"\x00\x00\x07\x01" + (3).to_bytes(4, "big") + b"abc", "not an IDX file"),
    (b"\x00\x00\x08\x03" + (3).to_bytes(4, "big"), "truncated IDX header"),
    (b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"ab", "truncated: sizes .3,. of uint8 need 3 data bytes, found 2"),
    (b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"abcd", "trailing bytes"),
])
def test_idx_parser_rejects_bad_files(tmp_path, blob, message):
    (tmp_path / "bad-idx").write_bytes(blob)
    with pytest.raises(ValueError, match=message) as e:
        data.read_idx(tmp_path / "bad-idx")
    assert "bad-idx" in str(e.value)


def test_idx_parser_rejects_truncated_gzip(tiny_idx):
    d, images, _ = tiny_idx
    blob = gzip.compress(idx_bytes(0x08, (3, 28, 28), images.tobytes()))
    (d / "cut.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="cut.gz: damaged gzip"):
        data.read_idx(d / "cut.gz")


def test_idx_pair_checks_label_count_and_values(tiny_idx):
    d, _, labels = tiny_idx
    (d / "two").write_bytes(idx_bytes(0x08, (2,), labels[:2].tobytes()))
    with pytest.raises(ValueError, match="two: 2 labels, but img holds 3 images"):
        data._read_idx_pair(d / "img", d / "two")
    (d / "eleven").write_bytes(idx_bytes(0x08, (3,), bytes([1, 11, 2])))
    with pytest.raises(ValueError, match="0..9"):
        data._read_idx_pair(d / "img", d / "eleven")
    with pytest.raises(ValueError, match="28, 28"):
        data._read_idx_pair(d / "lab.gz", d / "lab.gz")


def test_mnist_loader_checks_image_counts(tiny_idx):
    d, _, _ = tiny_idx
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (d / stem).write_bytes((d / "img").read_bytes())
    for stem in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (d / stem).write_bytes((d / "lab.gz").read_bytes())
    with pytest.raises(ValueError, match="train-images-idx3-ubyte: expected 60000 images, found 3"):
        load("mnist", search_dirs=[d])


@needs_fashion
def test_fashion_mnist_from_the_debian_package():
    ds = load("fashion-mnist", dtype=np.float32, binarize=True)
    assert (ds.train.shape, ds.valid.shape, ds.test.shape) == ((50_000, 784), (10_000, 784), (10_000, 784))
    assert ds.train.dtype == np.float32 and not ds.binary and ds.dynamic_binarize
    assert ds.train.min() == 0.0 and ds.train.max() == 1.0 and ds.image_shape == (28, 28)
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images of each of the 10 classes
    assert np.bincount(np.concatenate([ds.train_labels, ds.valid_labels])).tolist() == [6000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10


# ---- missing files ------------------------------------------------------------------------------

def test_missing_files_message_lists_files_and_every_directory(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as e:
        load("mnist", search_dirs=[tmp_path / "a", tmp_path / "b"], cache_dir=tmp_path / "cache")
    msg = str(e.value)
    for d in ("a/mnist", "a", "b/mnist", "b", "cache/mnist", "cache"):
        assert f"{tmp_path / d}  (" in msg
    assert "(missing train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)" in msg
    for hint in ("--data-dir", "NPVAE_DATA_DIR", "--download"):
        assert hint in msg
    assert isinstance(e.value, data.DataNotFoundError)


def test_missing_binarized_mnist_names_both_forms_and_says_when_no_dirs():
    with pytest.raises(FileNotFoundError, match="(?s)binarized_mnist.npz or all of binarized_mnist_train.amat.*"
                                                "no directories were given"):
        load("binarized-mnist")


# ---- dynamic binarisation -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binarize_dynamic_is_a_bernoulli_draw(dtype):
    p = np.random.default_rng(0).uniform(0.05, 0.95, size=(20, 50)).astype(dtype)
    p[0, :2] = 0.0, 1.0
    K, rng = 2000, np.random.default_rng(1)
    draws = np.stack([binarize_dynamic(p, rng) for _ in range(K)])  # (K, 20, 50)
    assert draws.dtype == dtype and draws.shape == (K, 20, 50) and set(np.unique(draws)) == {0, 1}
    assert draws[:, 0, 0].max() == 0 and draws[:, 0, 1].min() == 1
    q = p.astype(np.float64)[1:]
    z = (draws[:, 1:].mean(axis=0) - q) / np.sqrt(q * (1 - q) / K)  # standard normal per element
    assert np.abs(z).max() < 5.0 and abs(z.mean()) < 5.0 / np.sqrt(z.size)


def test_binarize_dynamic_same_seed_same_draw_and_checks_inputs():
    p = np.full((4, 30), 0.5)
    a = binarize_dynamic(p, np.random.default_rng(3))
    np.testing.assert_array_equal(a, binarize_dynamic(p, np.random.default_rng(3)))
    assert not np.array_equal(a, binarize_dynamic(p, np.random.default_rng(4)))
    with pytest.raises(ValueError, match="Generator"):
        binarize_dynamic(p, 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize_dynamic(p + 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="float32 or float64"):
        binarize_dynamic(p.astype(np.uint8), np.random.default_rng(0))


# ---- synthetic ----------------------------------------------------------------------------------

def test_synthetic_is_deterministic_and_records_its_truth():
    a, b, c = load("synthetic", seed=5), load("synthetic", seed=5), load("synthetic", seed=6)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.truth["W"], b.truth["W"])
    assert a.truth["sigma2"] == b.truth["sigma2"] and not np.array_equal(a.train, c.train)
    assert (a.train.shape, a.valid.shape, a.test.shape) == ((10_000, 16), (2_000, 16), (2_000, 16))
    assert a.image_shape == (1, 16) and not a.binary and a.truth["W"].shape == (16, 4)
    assert a.train.min() < 0 or a.train.max() > 1  # Gaussian, not in [0, 1]
    with pytest.raises(ValueError, match="Gaussian"):
        load("synthetic", binarize=True)


def test_synthetic_moments_match_the_linear_gaussian_model():
    ds = load("synthetic", seed=0)
    W, b, s2 = ds.truth["W"], ds.truth["b"], ds.truth["sigma2"]
    x = np.vstack([ds.train, ds.valid, ds.test])
    n, C = len(x), W @ W.T + s2 * np.eye(16)  # p(x) = N(b, W W^T + sigma2 I), Tipping & Bishop 1999
    assert 0.1 <= s2 <= 0.5
    assert np.all(np.abs(x.mean(0) - b) < 5 * np.sqrt(np.diag(C) / n))
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C**2) / n)  # std error of a sample covariance entry
    assert np.all(np.abs(np.cov(x.T) - C) < 5 * se)
    assert load("synthetic", dtype=np.float32).truth["W"].dtype == np.float32


# ---- directories --------------------------------------------------------------------------------

def test_default_search_dirs_order_and_cleanup(tmp_path):
    got = default_search_dirs(tmp_path / "a", f"{tmp_path / 'e1'}{os.pathsep}{tmp_path / 'e2'}", tmp_path / "c")
    assert got == [tmp_path / "a", tmp_path / "e1", tmp_path / "e2", tmp_path / "c"]
    assert default_search_dirs(None, "", None) == []
    assert default_search_dirs([tmp_path, tmp_path], None, tmp_path) == [tmp_path]
    assert default_search_dirs("~/d") == [Path("~/d").expanduser()]


def test_default_cache_dir_reads_only_the_mapping_passed_in():
    assert default_cache_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/h"}) == Path("/x/cache/npvae")
    assert default_cache_dir({"XDG_CACHE_HOME": "rel", "HOME": "/h"}) == Path("/h/.cache/npvae")
    assert default_cache_dir({"HOME": "/h"}) == Path("/h/.cache/npvae")


# ---- downloads (file:// URLs only) --------------------------------------------------------------

def test_fetch_good_and_bad_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"npvae test payload")
    dest = tmp_path / "cache" / "x" / "file.bin"
    _download.fetch(src.as_uri(), dest, sha256(b"npvae test payload"))
    assert dest.read_bytes() == b"npvae test payload"
    assert os.listdir(dest.parent) == ["file.bin"]  # no temporary file left
    bad = tmp_path / "cache" / "y" / "file.bin"
    with pytest.raises(ValueError, match="sha256 of the downloaded file"):
        _download.fetch(src.as_uri(), bad, "0" * 64)
    assert os.listdir(bad.parent) == []
    with pytest.raises(OSError, match="could not download"):
        _download.fetch((tmp_path / "absent").as_uri(), bad, "0" * 64)
    assert os.listdir(bad.parent) == []


def test_download_rejects_a_bad_file_and_leaves_nothing(tmp_path, monkeypatch, tiny_idx):
    d, _, _ = tiny_idx
    urls = {f: ((d / "img").as_uri(), "0" * 64) for f in _download.URLS["mnist"]}
    monkeypatch.setitem(_download.URLS, "mnist", urls)
    with pytest.raises(ValueError, match="sha256"):
        load("mnist", cache_dir=tmp_path / "cache", download=True)
    assert not (tmp_path / "cache").exists()  # nothing kept, not even the folders the download made


def test_download_of_binarized_mnist_checks_the_parsed_arrays(tmp_path, monkeypatch):
    src = tmp_path / "tiny.amat"
    src.write_text(amat_text(np.zeros((2, 784), np.uint8)))
    urls = {f: (src.as_uri(), sha256(src.read_bytes())) for f in _download.URLS["binarized-mnist"]}
    monkeypatch.setitem(_download.URLS, "binarized-mnist", urls)
    with pytest.raises(ValueError, match=r"shape \(2, 784\), expected \(50000, 784\)"):
        load("binarized-mnist", cache_dir=tmp_path / "cache", download=True)
    assert not (tmp_path / "cache").exists()  # nothing kept, not even the folders the download made


@needs_fashion
def test_download_then_load_through_file_urls(tmp_path, monkeypatch):
    urls = {f: ((FASHION / f).as_uri(), sha256((FASHION / f).read_bytes())) for f in _download.URLS["mnist"]}
    monkeypatch.setitem(_download.URLS, "mnist", urls)  # Fashion-MNIST files stand in for MNIST: same format
    ds = load("mnist", cache_dir=tmp_path, download=True)
    assert sorted(os.listdir(tmp_path / "mnist")) == sorted(urls)
    assert ds.train.shape == (50_000, 784) and ds.test_labels.shape == (10_000,)
    assert data._locate("mnist", [tmp_path / "mnist"])[0] is not None  # found from now on, without downloading


def test_every_dataset_has_a_loader():
    assert DATASETS == ("digits", "binarized-mnist", "mnist", "fashion-mnist", "synthetic")
    assert set(_download.URLS) == {"binarized-mnist", "mnist", "fashion-mnist"}


def test_synthetic_truth_builds_the_linear_gaussian_oracle():
    from scipy.stats import multivariate_normal

    from npvae.oracle.linear_chain import LinearGaussian

    ds = load("synthetic", seed=3)
    W, b, s2 = ds.truth["W"], ds.truth["b"], ds.truth["sigma2"]
    model = LinearGaussian(**ds.truth)
    want = multivariate_normal(b, W @ W.T + s2 * np.eye(16)).logpdf(ds.test[:50])
    np.testing.assert_allclose(model.log_marginal(ds.test[:50]), want, rtol=1e-10)


def test_the_digits_are_sklearns_read_without_importing_it():
    """The digits are read from the file scikit-learn ships (importing sklearn costs ~1.6 s of the first command):
    the same pixels and labels as sklearn.datasets.load_digits, and sklearn not imported by loading them."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from npvae.store.data import _digits_arrays

    pixels, target = _digits_arrays()
    bunch = load_digits()
    assert np.array_equal(pixels, bunch.data) and np.array_equal(target, bunch.target)
    code = ("import sys; from npvae.store.data import load; load('digits'); "
            "print(sorted(m for m in sys.modules if m == 'sklearn' or m.startswith('sklearn.')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
