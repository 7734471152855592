"""SIGTERM and SIGHUP (how schedulers, `timeout`, systemd and Dask stop jobs) handled as Ctrl-C, with 128 + n exit codes."""

from __future__ import annotations


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (schedulers, `timeout`, systemd, Dask), raised where the process is, as Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def stop_signals() -> dict:
    """Make SIGTERM and SIGHUP stop a command as Ctrl-C does (the main thread only); returns the handlers they replace."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _raise_stopped) for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGHUP")) if s}


def exit_code(e: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process a signal stopped: 130 for Ctrl-C (SIGINT)."""
    return 128 + getattr(e, "signum", 2)
