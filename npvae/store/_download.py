"""Download public data files into a cache directory, each checked against its published SHA-256.

Only `npvae.store.data.load(..., download=True, cache_dir=...)` calls this; nothing here runs on import.
A file appears under its final name only after its checksum (and any extra check) has passed:
it is written to a temporary file in the same directory and moved into place with `os.replace`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable

_BMNIST = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
_MNIST = "https://storage.googleapis.com/cvdf-datasets/mnist/"  # Google's mirror; yann.lecun.com no longer serves it
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # listed in zalandoresearch/fashion-mnist

# data set -> file name -> (URL, sha256 of the file exactly as served).
# Every sum is the one published in tensorflow/datasets, tensorflow_datasets/url_checksums/
# {binarized_mnist,mnist,fashion_mnist}.txt; the MNIST sums also appear in many independent download
# scripts. Plain http is acceptable only because the sum is checked before the file is kept.
URLS: dict[str, dict[str, tuple[str, str]]] = {
    "binarized-mnist": {
        "binarized_mnist_train.amat": (_BMNIST + "binarized_mnist_train.amat",
                                       "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
        "binarized_mnist_valid.amat": (_BMNIST + "binarized_mnist_valid.amat",
                                       "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
        "binarized_mnist_test.amat": (_BMNIST + "binarized_mnist_test.amat",
                                      "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": (_MNIST + "train-images-idx3-ubyte.gz",
                                       "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": (_MNIST + "train-labels-idx1-ubyte.gz",
                                       "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": (_MNIST + "t10k-images-idx3-ubyte.gz",
                                      "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": (_MNIST + "t10k-labels-idx1-ubyte.gz",
                                      "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (_FASHION + "train-images-idx3-ubyte.gz",
                                       "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": (_FASHION + "train-labels-idx1-ubyte.gz",
                                       "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": (_FASHION + "t10k-images-idx3-ubyte.gz",
                                      "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": (_FASHION + "t10k-labels-idx1-ubyte.gz",
                                      "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
}


class DownloadError(OSError):
    """A file could not be fetched (no connection, a server down or refusing): the message names the URL."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: Path, sha256: str, *, verify: Callable[[Path], None] | None = None,
          timeout: float = 60.0) -> Path:
    """Download `url` to `dest` if its SHA-256 is `sha256` and `verify(tmp_path)` raises nothing.

    On any failure the partial file is deleted and nothing is left at `dest`; a checksum mismatch
    raises ValueError, a network failure DownloadError (an OSError; both naming the URL).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    shutil.copyfileobj(response, out)
            except OSError as e:  # urllib.error.URLError is an OSError
                raise DownloadError(f"could not download {url}: {e}") from e
        got = sha256_file(tmp)
        if got != sha256:
            raise ValueError(f"{url}: sha256 of the downloaded file is {got}, expected {sha256}; "
                             f"the download was deleted (a changed or damaged file: try again, or fetch it by hand)")
        if verify is not None:
            verify(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
