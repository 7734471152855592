"""A run directory: its file names, one writer at a time, and the invariants that survive a kill -9.

Files: `config.json`, `last.safetensors` (end of the latest epoch), `best.safetensors` (the epoch with
the best validation bound), `history.json`, `data.json` (where the data came from), `.npvae-run`
(marks a directory npvae created) and `.lock` (held by the process writing the run). Runs of npvae
0.1 hold `last.npz`/`best.npz` instead; they are read, and replaced by safetensors files when resumed.

What a kill at any instant leaves (the trainer writes, per epoch, history.json, then last, then best):
- every checkpoint is whole (atomic replacement, npvae.store.checkpoint);
- history.json is at most one epoch ahead of last, never behind it; resuming rewrites it from last;
- best may lag last by one epoch, only when that epoch improved the bound and the kill fell between
  the two writes. last records the epoch best must hold (`best_epoch`), so `repair` restores best
  from last: then best holds the bound last reports, as after an uninterrupted epoch;
- leftover temporary files (`.last.safetensors.*.tmp`) are removed by the next writer.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from datetime import datetime
from pathlib import Path

from .atomic import write_bytes, write_json

__all__ = ["RunDirError", "RunLock", "RunLocked", "checkpoint_path", "claim_dir", "claim_new", "clean_temporaries", "is_run", "new_default",
           "read_data_source", "repair", "write_data_source", "CHECKPOINTS", "MARKER"]

CHECKPOINTS = ("last", "best")
SUFFIX = ".safetensors"
LEGACY_SUFFIX = ".npz"  # npvae 0.1
MARKER = ".npvae-run"
LOCK = ".lock"
DATA = "data.json"


class RunDirError(ValueError):
    """A run directory cannot be used as asked: another process holds it, or it is not a run."""


class RunLocked(RunDirError):
    """Another process holds the run's lock."""


def checkpoint_path(run_dir, which: str) -> Path:
    """The file of checkpoint `which` ("last", "best", a file name in run_dir, or a path): the existing one, npvae 0.1's if only it exists."""
    run_dir = Path(run_dir)
    if which in CHECKPOINTS:
        new, old = run_dir / (which + SUFFIX), run_dir / (which + LEGACY_SUFFIX)
        return old if old.exists() and not new.exists() else new
    p = Path(which)
    return p if p.is_absolute() or p.parent != Path(".") else run_dir / p


def is_run(run_dir) -> bool:
    """Whether run_dir was made by npvae train (marker) or holds a checkpoint of a run."""
    run_dir = Path(run_dir)
    return (run_dir / MARKER).exists() or any(checkpoint_path(run_dir, w).exists() for w in CHECKPOINTS)


def claim_new(run_dir) -> Path:
    """Make (or accept) run_dir for a new run: absent, empty, or a run that never finished an epoch; else RunDirError."""
    run_dir = Path(run_dir)
    if checkpoint_path(run_dir, "last").exists():
        raise RunDirError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, or choose another --out")
    return claim_dir(run_dir, MARKER, "--out", "an npvae run directory")


def claim_dir(directory, marker: str, option: str, what: str = "a directory npvae made", ours=()) -> Path:
    """Make (or accept) a directory a command writes into: absent, empty, or made by npvae (it holds `marker`, or one of
    the files named in `ours`); else RunDirError, and the user's files are left alone. Marks it with `marker`."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"{directory} exists and is not a directory: choose another {option}")
    if directory.exists() and not any((directory / name).exists() for name in (marker, *ours)):
        held = sorted(p.name for p in directory.iterdir())
        if held:  # the user's own files, which npvae would overwrite
            shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
            raise RunDirError(f"{directory} exists and is not {what} (it holds {shown}); "
                              f"choose a new or empty directory for {option}")
    directory.mkdir(parents=True, exist_ok=True)
    mark = directory / marker
    if mark.is_symlink() or not mark.is_file():
        write_bytes(mark, b"")  # replaces a planted link, never writes through it
    return directory


def new_default(parent, stem: str) -> Path:
    """A fresh directory parent/<stem>-<date>-<time>[-n], claimed with an exclusive mkdir so concurrent runs never share one."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    for n in range(1, 10_000):
        run_dir = parent / (base if n == 1 else f"{base}-{n}")
        try:
            run_dir.mkdir()  # atomic: exactly one of several processes creates a given name
        except FileExistsError:
            continue
        write_bytes(run_dir / MARKER, b"")
        return run_dir
    raise RunDirError(f"could not find a free run name under {parent} for {base}")


class RunLock:
    """An exclusive lock on run_dir/.lock for as long as a process writes the run; the holder's pid is in the file.

    flock locks belong to the open file, so the kernel releases them when the process dies, however it dies.
    """

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK
        self.fd = None

    def __enter__(self) -> "RunLock":
        fd = _open_regular(self.path)
        try:
            _lock(fd)
        except OSError:  # BlockingIOError (POSIX) or PermissionError (Windows): someone holds it
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            except OSError:  # Windows: the locked byte cannot be read by others
                holder = "unknown"
            os.close(fd)
            raise RunLocked(f"{self.path.parent} is in use by another npvae process (pid {holder}); "
                              "wait for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the lock
            self.fd = None


def _open_regular(path: Path) -> int:
    """Open (or create) the lock file for writing without following a link: a `.lock` that is a link, or not a regular
    file, is refused (RunDirError), since truncating it would truncate whatever it points to."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
    except OSError:  # ELOOP: a link (O_NOFOLLOW); EISDIR: a directory
        if not (path.is_symlink() or path.exists()):
            raise
    what = f"a symbolic link (to {os.readlink(path)})" if path.is_symlink() else "not a regular file"
    raise RunDirError(f"{path} is {what}: npvae locks a run with a plain file there and never writes through a link; "
                      f"remove it (rm {path}) and try again")


def _lock(fd: int) -> None:
    """Take an exclusive, non-blocking lock on the open file fd, or raise OSError."""
    try:
        import fcntl
    except ImportError:  # Windows: a byte-range lock, which the OS also drops when the process dies
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _is_temporary(name: str) -> bool:
    return name.endswith(".tmp") and (name.startswith(".") or name.endswith(".json.tmp"))


def clean_temporaries(run_dir) -> list[str]:
    """Remove what interrupted writes left behind (`.last.safetensors.*.tmp`, `history.json.tmp`); call holding the lock."""
    removed = []
    for p in Path(run_dir).iterdir():
        if _is_temporary(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)


def repair(run_dir, read_meta) -> str | None:
    """Make best hold the epoch last says it must (see the module docstring); returns what was done, or None.

    read_meta(path) -> the checkpoint's metadata (verified), as npvae.training.loop.read_meta.
    """
    run_dir = Path(run_dir)
    last = checkpoint_path(run_dir, "last")
    if not last.exists():
        return None
    meta = read_meta(last)
    best_epoch = meta.get("best_epoch")
    if best_epoch is None or best_epoch != meta.get("epoch"):
        return None  # best was last written at an earlier epoch, when last was too: nothing can be pending
    best = run_dir / ("best" + last.suffix)
    # An unreadable best is left for its reader to refuse: an atomic write cannot make one, so it was damaged or edited.
    if best.exists() and _epoch_or_none(read_meta, best) in (None, best_epoch):
        return None
    write_bytes(best, Path(last).read_bytes())  # a copy, written whole (store.atomic)
    return f"restored {best.name} from {last.name} (epoch {best_epoch}): an earlier process stopped between the two writes"


def _epoch_or_none(read_meta, path):
    """The epoch of the checkpoint at path, or None if it cannot be read."""
    try:
        return read_meta(path).get("epoch")
    except (ValueError, OSError):
        return None


def write_data_source(run_dir, source: dict) -> None:
    """Record where the run's data came from (data set name and the directories searched), for eval/sample/resume."""
    write_json(Path(run_dir, DATA), source)


def read_data_source(run_dir) -> dict | None:
    """The record write_data_source made, or None (a run of npvae 0.1, or a run on embedded data)."""
    p = Path(run_dir, DATA)
    if not p.exists():
        return None
    try:
        d = json.loads(p.read_text())
    except ValueError:
        return None
    return d if isinstance(d, dict) else None
