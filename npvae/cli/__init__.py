"""The `npvae` command line: the only place that reads argv and the environment. May import: everything.

One module a command: train, eval, sample, check, verify, explain, bench, sweep (each `cmd_<name>(args)`, returning the
exit code); args holds every command's options, data where data are looked for, runs what train, eval and sample share,
signals SIGTERM and SIGHUP as Ctrl-C, phrasing the library's errors as the command's options.
This module dispatches.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from . import args as cli_args
from . import phrasing
from .bench import cmd_bench
from .check import cmd_check
from .eval import cmd_eval
from .explain import cmd_explain
from .sample import cmd_sample
from .signals import exit_code, stop_signals
from .sweep import cmd_sweep
from .train import cmd_train
from .verify import cmd_verify


COMMANDS = {"check": cmd_check, "verify": cmd_verify, "train": cmd_train, "eval": cmd_eval, "sample": cmd_sample,
            "explain": cmd_explain, "bench": cmd_bench, "sweep": cmd_sweep}


def build_parser() -> argparse.ArgumentParser:
    return cli_args.build_parser(COMMANDS)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr, without the source line Python would print."""
    print(f"npvae: warning: {message}", file=sys.stderr if file is None else file)


# What each command expects in the file it was given, said when that file is missing.
EXPECTED_FILES = {
    "verify": "an .npz of a VAE's weights, data, noise and values as docs/verify.md describes; "
              "npvae verify --example FILE writes one",
    "sweep": "a sweep SPEC in TOML as docs/sweep.md describes (e.g. bench/burda.toml)",
}


def error_message(command: str, e: Exception, parser: argparse.ArgumentParser | None = None) -> str:
    """An error as one line: an operating-system error names its file and what went wrong there (and, for a missing file,
    what the command expected in it) instead of Python's '[Errno 2] No such file or directory: ...'; given the parser,
    the library's `kl='mc'` for an option of `command` reads `--kl mc` (npvae.cli.phrasing)."""
    if isinstance(e, OSError) and e.filename is not None and str(e).startswith("[Errno"):
        why = (e.strerror or "error").lower()
        missing = isinstance(e, FileNotFoundError) and e.strerror == os.strerror(errno.ENOENT)  # not a file npvae writes
        expected = EXPECTED_FILES.get(command) if missing else None
        return f"{e.filename}: {why}" + (f" (expected: {expected})" if expected else "")
    return str(e) if parser is None else phrasing.as_options(str(e), phrasing.options_of(parser, command))


def _reader_gone() -> int:
    """The reader of stdout went away (`npvae eval RUN | head -1`): not an error of the command's, so nothing is said."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes there at exit, instead of failing again
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell reports for a command that wrote into a closed pipe


def _flushed(code: int) -> int:
    """`code`, once stdout is flushed: into a pipe, output is buffered, and a reader gone shows here, not at exit."""
    try:
        if sys.stdout is not None:  # None when started with stdout closed (`npvae ... >&-`), where print writes nothing
            sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    return code


def _unrecognized(sub: argparse.ArgumentParser, extras: list[str]) -> str:
    """argparse's 'unrecognized arguments' with the option each misspelt one is close to, and where the options are listed."""
    import difflib

    options = [s for a in sub._actions for s in a.option_strings]
    near = {}
    for word in extras:
        name = word.partition("=")[0]
        if name.startswith("-") and name not in near:
            match = difflib.get_close_matches(name, options, n=1)
            if match:
                near[name] = match[0]
    if len(near) == 1:
        hint = f"did you mean {next(iter(near.values()))}? "
    else:
        hint = "".join(f"{o} for {w}, " for w, o in near.items()).removesuffix(", ")
        hint = f"did you mean {hint}? " if hint else ""
    return f"unrecognized arguments: {' '.join(extras)} ({hint}{sub.prog} --help lists the options)"


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parser's arguments, with a usage error said by the command it concerns: `npvae train --epcohs 5` is train's error,
    with train's usage and the option meant, and `npvae trian` names the command meant (argparse 3.11 does neither)."""
    import difflib

    commands = cli_args.subcommands(parser)
    if argv[:1] == ["bench"]:  # argparse's REMAINDER drops a leading option (`npvae bench --quick`): pass it all on
        args = parser.parse_args(["bench"])
        args.bench_args = argv[1:]
        return args
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        match = difflib.get_close_matches(argv[0], commands, n=1)
        if match:
            parser.error(f"argument COMMAND: invalid choice: {argv[0]!r} (did you mean {match[0]}? choose from "
                         + ", ".join(map(repr, commands)) + ")")
    args, extras = parser.parse_known_args(argv)
    if extras:
        if extras[0] in argv and argv.index(extras[0]) < argv.index(args.command):  # `npvae --verbose train`
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        sub = commands[args.command]
        sub.error(_unrecognized(sub, extras))
    return args


def main(argv=None) -> int:
    import signal
    import warnings

    argv = sys.argv[1:] if argv is None else list(argv)
    warnings.showwarning = _show_warning
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as e:  # a usage error (2, message printed) or --help/--version (0): a return code, as for the rest
        return _flushed(e.code if isinstance(e.code, int) else 2)
    replaced = stop_signals()
    try:
        code = args.func(args)
    except BrokenPipeError:  # the reader went away while the command wrote
        return _reader_gone()
    except (ValueError, OSError) as e:  # bad input, missing files, a failed download: a clear message, no traceback
        print(f"npvae {args.command}: error: {error_message(args.command, e, parser)}", file=sys.stderr)
        code = 2
    except MemoryError:  # what the estimates before a command did not foresee: one line, as for a refusal
        print(f"npvae {args.command}: error: out of memory (the estimates before the command allowed it, the machine did "
              "not): use smaller --batch-size, --k or --n, or free memory", file=sys.stderr)
        code = 2
    except KeyboardInterrupt as e:  # outside training (which says how to resume): nothing half-written to report
        name = signal.Signals(getattr(e, "signum", signal.SIGINT)).name
        print(f"\nnpvae {args.command}: interrupted ({name})", file=sys.stderr)
        code = exit_code(e)
    finally:
        for s, handler in replaced.items():
            signal.signal(s, handler)
    return _flushed(code)
