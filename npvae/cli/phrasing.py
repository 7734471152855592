"""Library errors in the command line's words: `kl='mc'` becomes `--kl mc` for a user of the command that was run.

The library phrases its refusals for Python callers, as keyword arguments (`use kl='mc'`, `(use free_bits=0)`); that is
right for them and stays so. On the command line main() rephrases each `name=value` whose name is the dest of an option
of the command that was run: the option's long spelling and the value (`--kl mc`, `--free-bits 0`; a flag for `=True`),
and a message that opens with such a name (`kl_weight must be ...`, `sigma2 = 1e-50 is ...`) opens with the option. Any
other name stays as written: an option of another command, a file's entry, a Python-only argument.
"""

from __future__ import annotations

import argparse
import re
import shlex

_QUOTED = r"'[^']*'|\"[^\"]*\""
_VALUE = rf"{_QUOTED}|[\w+\-]+(?:\.\w+)*"
# name=value: not the tail of a longer name, an attribute or an option already spelt (--kl=mc); the value quoted, or a
# bare number or word (a sentence's full stop left out); then any quoted alternatives ("backend='numba' or 'numpy'").
_PAIR = re.compile(rf"(?<![\w.\-\[])(?P<name>[A-Za-z_]\w*)=(?!=)(?P<value>{_VALUE})"
                   rf"(?P<alternatives>(?:,?\s+or\s+(?:{_QUOTED})|,\s*(?:{_QUOTED}))*)")
# A message that opens with the name: "kl_weight must be ...", "sigma2 = 1e-50 is not ..." (spaced, at the opening only).
_OPENING = re.compile(rf"^(?P<name>[A-Za-z_]\w*)(?:(?= must ) | = (?P<value>{_VALUE})(?= ))")


def options_of(parser: argparse.ArgumentParser, command: str) -> dict:
    """{dest: action} of the options (not the positionals, not --help) of `command`, a subcommand of `parser`."""
    from .args import subcommands

    return {a.dest: a for a in subcommands(parser)[command]._actions if a.option_strings and a.dest != "help"}


def spelling(action: argparse.Action) -> str:
    """An option's long spelling: --k for -k/--k."""
    return next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])


def _unquoted(value: str) -> str:
    return value[1:-1] if value[:1] in "'\"" and len(value) >= 2 else value


def as_options(message: str, options: dict) -> str:
    """`message` with each `name=value` of a name in `options` ({dest: action}, options_of's) as the option and its value.

    A message that already spells the option out (a library message giving both phrasings) keeps its keyword form.
    """
    def pair(m: re.Match) -> str:
        action = options.get(m["name"])
        if action is None or re.search(rf"(?<![\w-]){re.escape(spelling(action))}(?![\w-])", message):
            return m[0]
        value = _unquoted(m["value"])
        if action.nargs == 0:  # a flag: `quick=True` is `--quick`; it has no spelling for False
            return spelling(action) if value == "True" and not m["alternatives"] else m[0]
        alternatives = re.sub(_QUOTED, lambda q: shlex.quote(_unquoted(q[0])), m["alternatives"])
        return f"{spelling(action)} {shlex.quote(value)}{alternatives}"

    def opening(m: re.Match) -> str:
        action = options.get(m["name"])
        if action is None or (m["value"] is not None and action.nargs == 0):
            return m[0]
        return f"{spelling(action)} " + ("" if m["value"] is None else shlex.quote(_unquoted(m["value"])))

    return _OPENING.sub(opening, _PAIR.sub(pair, message))
