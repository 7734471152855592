"""Every file npvae writes is written whole or not at all: a fresh temporary file beside the target (a new random
name opened with O_EXCL and O_NOFOLLOW, so no planted file is written through), fsynced, then renamed over the target
(a planted link there is replaced, never followed). A reader sees the old file or the new one, never half of either; a failure leaves the old one and no
temporary file behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets


def write_bytes(path, data: bytes) -> None:
    """Replace `path` with `data` atomically; mode 0666 minus the umask, as a plain open() would give.

    The temporary file's random name is chosen before it is created (O_EXCL, O_NOFOLLOW), inside the block that removes
    it on any exception, so a signal at any instant (SIGTERM while the file is being created) leaves no temporary file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:  # the target's directory: name the target, not the temporary file
            raise FileNotFoundError(errno.ENOENT, "cannot be written, its directory does not exist", path) from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.chmod(tmp, 0o666 & ~_umask())  # created 0600
        os.replace(tmp, path)  # same directory: a rename within one filesystem
    except FileExistsError:  # from os.open only: another writer's name (odds 2^-64), not ours to remove
        raise
    except BaseException:  # KeyboardInterrupt too: never leave a temp file or touch the old file
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def write_text(path, text: str) -> None:
    """`write_bytes` of text in UTF-8."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, **dumps) -> None:
    """`write_text` of json.dumps(obj, indent=1, **dumps)."""
    write_text(path, json.dumps(obj, indent=1, **dumps))


def write_figure(path, fig, **savefig) -> None:
    """A matplotlib figure as PNG (savefig's options passed on), rendered in memory and written with `write_bytes`."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    write_bytes(path, buf.getvalue())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
