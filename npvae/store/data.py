"""Data sets as arrays x: (N, D) with named splits, each checked as it is read.

`load(name)` for name in DATASETS returns a `Dataset`. Every image set holds values in [0, 1];
`synthetic` is the one exception (Gaussian data with a known exact log p(x)). The splits are float
arrays of the dtype asked for, or, with `compact=True`, a binary set's splits stay uint8 0/1 (a
quarter of float32's memory, an eighth of float64's) and `Dataset.dtype` is the float type they are
used in: the trainer and `npvae.evaluation.evaluate` cast them batch by batch (`as_float`), so no float copy of
a whole split is ever made.

Where files are looked for: for each directory d of `search_dirs`, then `cache_dir`, then (for
fashion-mnist only) Debian's /usr/share/datasets/fashion-mnist, first `d/<name>/` then `d/` itself;
the first directory holding a complete set of files wins. The library never reads the environment
: the CLI builds `search_dirs` with `default_search_dirs` from --data-dir,
$NPVAE_DATA_DIR and `default_cache_dir(os.environ)`. With `download=True` missing files are fetched
into `cache_dir/<name>/` and checked against published SHA-256 sums (see _download.URLS).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from . import _download
from .. import _validate
from .data_files import (  # noqa: F401  (the readers, and their names here, which tests use)
    BINARIZED_MNIST_SHA256, SPLITS, _check_binarized, _parse_amat, _read_binarized_npz, _read_idx_pair, read_idx)

DATASETS = ("digits", "binarized-mnist", "mnist", "fashion-mnist", "synthetic")

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist

DIGITS_SPLIT = (1297, 250, 250)  # train/valid/test sizes out of sklearn's 1797 digits
SYNTHETIC_SIZES = {"D": 16, "Z": 4, "train": 10_000, "valid": 2_000, "test": 2_000}

_AMAT = tuple(f"binarized_mnist_{s}.amat" for s in SPLITS)
_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# data set -> alternative complete sets of files, tried in this order inside each directory
_FILE_SETS = {"binarized-mnist": (("binarized_mnist.npz",), _AMAT), "mnist": (_IDX,), "fashion-mnist": (_IDX,)}
_HOW_TO_GET = ("To get them: put the files in a directory and pass --data-dir DIR or set NPVAE_DATA_DIR=DIR, "
               "or pass --download to fetch them into the cache (from Python: load(name, search_dirs=[DIR]) "
               "or load(name, cache_dir=DIR, download=True)).")


class DataNotFoundError(FileNotFoundError):
    """A data set's files are in none of the directories searched; the message lists them all."""


@dataclass(frozen=True, eq=False)  # eq=False: == on arrays has no single truth value
class Dataset:
    """Named splits of one data set; x: (N, D) float32/float64, in [0, 1] except for `synthetic`; or, for a binary
    set, compact: uint8 0/1, with `float_dtype` the float type the points are used in (module docstring)."""

    name: str
    train: np.ndarray  # (N_train, D)
    valid: np.ndarray  # (N_valid, D)
    test: np.ndarray  # (N_test, D)
    image_shape: tuple[int, int]  # rows * cols == D; (1, D) when the data are not images
    binary: bool  # every value is exactly 0 or 1
    train_labels: np.ndarray | None = None  # (N_train,) int64 class labels, when the source has them
    valid_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    dynamic_binarize: bool = False  # grey levels meant to be redrawn by binarize_dynamic each epoch
    truth: dict | None = None  # synthetic only: LinearGaussian(**truth) parameters W (D, Z), b (D,), sigma2
    source: str | None = None  # the directory the files were read from; None for embedded and generated data
    float_dtype: np.dtype | None = None  # compact splits only: the float type they are used in

    def __post_init__(self):
        D = math.prod(self.image_shape)
        compact = isinstance(self.train, np.ndarray) and self.train.dtype == np.uint8
        if compact:
            if not self.binary:
                raise ValueError(f"{self.name}: uint8 (compact) splits must be binary")
            if self.float_dtype is None or np.dtype(self.float_dtype) not in _validate.FLOAT_DTYPES:
                got = None if self.float_dtype is None else np.dtype(self.float_dtype)
                raise ValueError(f"{self.name}: compact splits need float_dtype float32 or float64, got {got}")
            object.__setattr__(self, "float_dtype", np.dtype(self.float_dtype))
        elif self.float_dtype is not None and np.dtype(self.float_dtype) != self.train.dtype:
            raise ValueError(f"{self.name}: float_dtype {np.dtype(self.float_dtype)} but the splits are {self.train.dtype}")
        for s in SPLITS:
            x = getattr(self, s)
            if compact:
                if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2:
                    raise ValueError(f"{self.name}: {s} must be a 2-d uint8 array like train, got "
                                     f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
            else:
                _validate.float_array(s, x, 2)
            _validate.shape(s, x, (None, D))
            if x.dtype != self.train.dtype:
                raise ValueError(f"{self.name}: {s} has dtype {x.dtype} but train has {self.train.dtype}")
            labels = getattr(self, f"{s}_labels")
            if labels is not None:
                _validate.shape(f"{s}_labels", labels, (x.shape[0],))
            binary = (x.size == 0 or x.max() <= 1) if compact else np.all((x == 0) | (x == 1))
            if self.binary and not binary:
                raise ValueError(f"{self.name}: {s} is marked binary but holds values other than 0 and 1")

    @property
    def dtype(self) -> np.dtype:
        """The float type the points are used in: the splits' own, or float_dtype for compact splits."""
        return self.train.dtype if self.float_dtype is None else self.float_dtype

    @property
    def compact(self) -> bool:
        """True if the splits are stored as uint8 0/1 (cast with as_float batch by batch)."""
        return self.train.dtype == np.uint8

    def split(self, name: str) -> np.ndarray:
        """The (N, D) array of split 'train', 'valid' or 'test'."""
        return getattr(self, _validate.choice("split", name, SPLITS))


def as_float(x: np.ndarray, dtype) -> np.ndarray:
    """Rows of a split as float `dtype`, C-ordered: a compact (uint8) batch cast, a float one of that dtype unchanged."""
    return np.ascontiguousarray(x, dtype=dtype)


def binarize_dynamic(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fresh Bernoulli(x) draw [u < x], u ~ U[0, 1), same shape and dtype as x: dynamic binarisation."""
    _validate.float_array("x", x)
    _validate.generator("rng", rng)
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"x must lie in [0, 1] to be a Bernoulli mean, got values in [{x.min()}, {x.max()}]")
    return (rng.random(x.shape, dtype=x.dtype) < x).astype(x.dtype)


def subset_indices(n: int, N: int, rng: np.random.Generator, labels=None) -> np.ndarray:
    """n of N point indices (sorted), drawn by a seeded permutation; stratified by class where labels: (N,) are given.

    A prefix of a split is not a sample of it (binarised MNIST's test split is ordered by class). With labels,
    the points are put in random order within each class, classes one after another, and every (N / n)-th
    is taken from a random offset (systematic sampling), so each class gets its share of n to within one point.
    """
    _validate.positive_int("n", n)
    _validate.generator("rng", rng)
    if n > N:
        raise ValueError(f"a subset of {n} points was asked for, but the split has only {N}")
    if labels is None:
        return np.sort(rng.permutation(N)[:n])
    order = np.lexsort((rng.permutation(N), np.asarray(labels)))  # classes in turn, random order inside each
    picks = np.floor((np.arange(n) + rng.random()) * (N / n)).astype(np.int64)
    return np.sort(order[picks])


def default_search_dirs(data_dir=None, env_dir=None, cache_dir=None) -> list[Path]:
    """Directories in search order: --data-dir (one path or several), $NPVAE_DATA_DIR's value (os.pathsep-separated), the cache."""
    parts = []
    if data_dir is not None:
        parts += [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir)
    if env_dir:
        parts += str(env_dir).split(os.pathsep)
    if cache_dir is not None:
        parts.append(cache_dir)
    return _unique(Path(p).expanduser() for p in parts if str(p) != "")


def user_search_dirs(data_dir, env: Mapping[str, str]) -> list[Path]:
    """The CLI's search order for scripts (bench/): data_dir (None, one path or several), env's $NPVAE_DATA_DIR, its cache."""
    return default_search_dirs(data_dir, env.get("NPVAE_DATA_DIR"), default_cache_dir(env))


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """$XDG_CACHE_HOME/npvae, else $HOME/.cache/npvae, read from the mapping `env` passed in (e.g. os.environ).

    Only when `env` has no HOME does this fall back to Path.home().
    """
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG base-directory spec says to ignore relative values
        return Path(xdg) / "npvae"
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".cache" / "npvae"


def load(name: str, *, search_dirs=(), cache_dir=None, download: bool = False, dtype=np.float64,
         seed: int = 0, binarize: bool = False, compact: bool = False) -> Dataset:
    """Load data set `name` (one of DATASETS) as (N, D) arrays of `dtype`; files are found as the module docstring says.

    `seed` fixes the digits split and the synthetic draw; the MNIST splits are fixed. `binarize=True`
    marks grey data (mnist, fashion-mnist) for dynamic binarisation; it changes nothing for the
    already-binary sets and is an error for the Gaussian `synthetic` data. `compact=True` keeps the splits of
    a binary set (digits, binarized-mnist) as uint8 0/1, used as `dtype` (Dataset.dtype); grey-level and
    Gaussian sets stay float.
    """
    _validate.choice("name", name, DATASETS)
    dtype = np.dtype(dtype)
    if dtype not in _validate.FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if download and cache_dir is None:
        raise ValueError("download=True needs a cache_dir to download into")
    if name == "digits":
        return _compact(_digits(dtype, int(seed)), compact)
    if name == "synthetic":
        if binarize:
            raise ValueError("synthetic data are Gaussian (not in [0, 1]) and cannot be binarised")
        return _synthetic(dtype, int(seed))

    paths, report = _locate(name, _search_order(name, search_dirs, cache_dir))
    if paths is None and download:
        _fetch_all(name, Path(cache_dir).expanduser() / name)
        paths, _ = _locate(name, [Path(cache_dir).expanduser() / name])
    if paths is None:
        needed = " or all of ".join(", ".join(s) for s in _FILE_SETS[name])
        gz = " (each may also end in .gz)" if name != "binarized-mnist" else ""
        raise DataNotFoundError(f"{name}: data files not found. Needed: {needed}{gz}.\nLooked in:\n"
                                + ("\n".join(report) or "  (no directories were given)") + "\n" + _HOW_TO_GET)
    if name == "binarized-mnist":
        return _binarized_mnist(paths, dtype, compact)
    return _idx_dataset(name, paths, dtype, binarize)


# ---- finding and fetching files ------------------------------------------------------------------

def find(name: str, *, search_dirs=(), cache_dir=None) -> list[Path] | None:
    """The files load(name, search_dirs=..., cache_dir=...) would read, found the same way and not read; None if absent.

    For the data sets kept in files (binarized-mnist, mnist, fashion-mnist): what a command can say before it starts
    (`npvae explain` estimates a full run by whether binarised MNIST will be found).
    """
    _validate.choice("name", name, tuple(_FILE_SETS))
    return _locate(name, _search_order(name, search_dirs, cache_dir))[0]


def _search_order(name: str, search_dirs, cache_dir) -> list[Path]:
    """Each search dir, then the cache (then Debian's folder for fashion-mnist), each as DIR/<name>/ then DIR/."""
    if search_dirs is None:
        search_dirs = []
    elif isinstance(search_dirs, (str, os.PathLike)):  # one directory, not a string of one-letter ones
        search_dirs = [search_dirs]
    extra = [FASHION_MNIST_SYSTEM_DIR] if name == "fashion-mnist" else []
    roots = _unique([Path(d).expanduser() for d in search_dirs]
                    + ([Path(cache_dir).expanduser()] if cache_dir is not None else []) + extra)
    return _unique(p for d in roots for p in (d / name, d))


def _unique(paths) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def _find_file(d: Path, filename: str, gz_ok: bool) -> Path | None:
    for candidate in (filename, filename + ".gz") if gz_ok else (filename,):
        if (d / candidate).is_file():
            return d / candidate
    return None


def _locate(name: str, dirs: list[Path]) -> tuple[list[Path] | None, list[str]]:
    """The files of the first directory holding a complete set, or (None, one report line per directory)."""
    report = []
    for d in dirs:
        if not d.is_dir():
            report.append(f"  {d}  (no such directory)")
            continue
        notes = []
        for files in _FILE_SETS[name]:
            paths = [_find_file(d, f, gz_ok=name != "binarized-mnist") for f in files]
            if all(paths):
                return paths, []
            notes.append("missing " + ", ".join(f for f, p in zip(files, paths) if p is None))
        report.append(f"  {d}  ({'; or '.join(notes)})")
    return None, report


def _fetch_all(name: str, target: Path) -> None:
    """Download every file of `name` not already in `target`; binarized MNIST is also checked after parsing.

    A failure leaves no empty directory behind that this call made (target, and any above it that did not exist); a
    failed fetch says how to get the files without a connection.
    """
    made = [d for d in (target, *target.parents) if not d.exists()]  # innermost first: the folders fetch will create
    try:
        for filename, (url, sha256) in _download.URLS[name].items():
            if (target / filename).is_file():  # a file only gets its final name once verified
                continue
            verify = None
            if name == "binarized-mnist":
                split = SPLITS[_AMAT.index(filename)]
                verify = lambda p, split=split: _check_binarized(split, _parse_amat(p), p)  # noqa: E731
            try:
                _download.fetch(url, target / filename, sha256, verify=verify)
            except _download.DownloadError as e:
                raise _download.DownloadError(f"{e} ({_by_hand(name)})") from e
    except BaseException:
        for d in made:
            try:
                d.rmdir()  # only if still empty: files already verified stay for the next try
            except OSError:
                break
        raise


def _by_hand(name: str) -> str:
    """How to get `name`'s files without downloading them here: where they are served, and how to point load at them."""
    urls = [url for url, _ in _download.URLS[name].values()]
    base = os.path.commonprefix(urls).rpartition("/")[0] + "/"
    files = [url.rpartition("/")[2] for url in urls]
    listed = ", ".join(files[:-1]) + " and " + files[-1]
    return (f"no connection? fetch {listed} from {base} elsewhere, put them in a directory DIR and pass --data-dir DIR; "
            f"from Python: load({name!r}, search_dirs=[DIR])")


# ---- binarized MNIST -----------------------------------------------------------------------------

def _binarized_mnist(paths: list[Path], dtype: np.dtype, compact: bool = False) -> Dataset:
    """Larochelle & Murray (2011) static binarisation, 50k/10k/10k x 784, from the .npz or the three .amat files."""
    if len(paths) == 1:
        arrays, sources = _read_binarized_npz(paths[0]), dict.fromkeys(SPLITS, paths[0])
    else:
        arrays, sources = {s: _parse_amat(p) for s, p in zip(SPLITS, paths)}, dict(zip(SPLITS, paths))
    for s in SPLITS:
        _check_binarized(s, arrays[s], sources[s])
    splits = (arrays[s] if compact else arrays[s].astype(dtype) for s in SPLITS)
    return Dataset("binarized-mnist", *splits, image_shape=(28, 28), binary=True, source=str(paths[0].parent.resolve()),
                   float_dtype=dtype if compact else None)


# ---- IDX: MNIST and Fashion-MNIST ----------------------------------------------------------------

def _idx_dataset(name: str, paths: list[Path], dtype: np.dtype, binarize: bool) -> Dataset:
    """MNIST-format grey levels / 255; train = first 50,000 of the training file, valid = its last 10,000, test = t10k."""
    train_images, train_labels = _read_idx_pair(paths[0], paths[1], 60_000)
    test_images, test_labels = _read_idx_pair(paths[2], paths[3], 10_000)
    x_train, x_test = (np.divide(a.reshape(len(a), 784), dtype.type(255), dtype=dtype)  # (N, 784)
                       for a in (train_images, test_images))
    n = 50_000
    return Dataset(name, x_train[:n], x_train[n:], x_test, image_shape=(28, 28), binary=False,
                   train_labels=train_labels[:n], valid_labels=train_labels[n:], test_labels=test_labels,
                   dynamic_binarize=bool(binarize), source=str(paths[0].parent.resolve()))


# ---- digits and synthetic (no files) -------------------------------------------------------------

def _compact(d: Dataset, compact: bool) -> Dataset:
    """d with its (binary) splits as uint8 0/1, used as d's dtype; d itself unless compact."""
    if not compact:
        return d
    splits = {s: getattr(d, s).astype(np.uint8) for s in SPLITS}
    return dataclasses.replace(d, **splits, float_dtype=d.train.dtype)


def _digits(dtype: np.dtype, seed: int) -> Dataset:
    """sklearn's 8x8 digits (UCI optdigits, 1797 images), deterministically binarised: 1 where pixel / 16 >= 0.5.

    Split 1297 / 250 / 250 by the permutation np.random.default_rng(seed).permutation(1797).
    """
    pixels, target = _digits_arrays()
    x = (pixels / 16.0 >= 0.5).astype(dtype)  # (1797, 64)
    y = target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    a, b = DIGITS_SPLIT[0], DIGITS_SPLIT[0] + DIGITS_SPLIT[1]
    idx = perm[:a], perm[a:b], perm[b:]
    return Dataset("digits", *(x[i] for i in idx), image_shape=(8, 8), binary=True,
                   train_labels=y[idx[0]], valid_labels=y[idx[1]], test_labels=y[idx[2]])


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as (pixels (1797, 64) in 0..16, labels (1797,)), read from the file scikit-learn ships.

    `sklearn.datasets.load_digits` reads the same file with np.loadtxt; importing scikit-learn (and the scipy.stats it
    pulls in) takes about 1.6 s, a quarter of the README's first command, so the file is read directly where it is
    found in the installed package, and through load_digits where it is not (a layout of another scikit-learn version).
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")  # (1797, 65): 64 pixels, then the label
            if table.shape == (1797, 65):
                return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target


def _synthetic(dtype: np.dtype, seed: int) -> Dataset:
    """x = W z + b + sqrt(sigma2) eps, z ~ N(0, I_Z), eps ~ N(0, I_D): probabilistic PCA (Tipping & Bishop 1999).

    So log p(x) = log N(x; b, W W^T + sigma2 I) exactly. NOT in [0, 1]: for Gaussian decoders.
    From default_rng(seed), in this order: W (D, Z) ~ N(0, 1), b (D,) ~ N(0, 1), sigma2 ~ U(0.1, 0.5),
    then z (N, Z) and eps (N, D) for all N = train + valid + test rows, split in that order.
    """
    D, Z = SYNTHETIC_SIZES["D"], SYNTHETIC_SIZES["Z"]
    sizes = [SYNTHETIC_SIZES[s] for s in SPLITS]
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((D, Z))
    b = rng.standard_normal(D)
    sigma2 = float(rng.uniform(0.1, 0.5))
    z = rng.standard_normal((sum(sizes), Z))
    eps = rng.standard_normal((sum(sizes), D))
    x = (z @ W.T + b + np.sqrt(sigma2) * eps).astype(dtype)  # (N, D)
    train, valid, test = np.split(x, np.cumsum(sizes)[:-1])
    return Dataset("synthetic", train, valid, test, image_shape=(1, D), binary=False,
                   truth={"W": W.astype(dtype), "b": b.astype(dtype), "sigma2": sigma2})
