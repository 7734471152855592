"""Planting a bug: functions swapped for their broken versions wherever an npvae module holds them, then put back.

A function is held by name in the module that defines it, by every module that imported it by name, and as an entry
of a registry (a module-level dict such as estimators.BOUND, or a NamedTuple row of one). `swapped` replaces every such
binding within a block and restores each one in a finally; nothing is edited on disk. The bugs themselves are
npvae.checks.bugs; npvae.checks.breaks plants one by name.
"""

from __future__ import annotations

import contextlib
import importlib
import sys

# Modules the checks import lazily: imported before planting, so that they hold the originals and are patched too.
USED = ("npvae.checks.check", "npvae.checks.values", "npvae.checks.gradcheck", "npvae.vae.ladder_surrogate",
        "npvae.vae.ladder_objective", "npvae.vae.one_layer_objective", "npvae.backends.numpy_ref", "npvae.objectives")


def _npvae_modules(keep: tuple):
    """Every imported npvae module but those named in `keep` (which hold the broken functions under their own names)."""
    return [m for n, m in list(sys.modules.items())
            if m is not None and (n == "npvae" or n.startswith("npvae.")) and n not in keep]


def _holders(swap: dict, keep: tuple) -> list:
    """[(container, key, held, replacement, label)] for every binding of a function in `swap` (id -> (function,
    replacement)): module attributes, entries of module-level dicts, and dict entries that are NamedTuples holding one."""
    def hit(v):
        return id(v) in swap and swap[id(v)][0] is v

    out = []
    for mod in _npvae_modules(keep):
        space = vars(mod)
        for name, value in list(space.items()):
            if name.startswith("__"):
                continue
            if hit(value):
                out.append((space, name, value, swap[id(value)][1], f"{mod.__name__}.{name}"))
            elif type(value) is dict:
                for key, v in list(value.items()):
                    label = f"{mod.__name__}.{name}[{key!r}]"
                    if hit(v):
                        out.append((value, key, v, swap[id(v)][1], label))
                    elif isinstance(v, tuple) and hasattr(v, "_replace") and any(hit(f) for f in v):  # a registry row
                        out.append((value, key, v, v._replace(**{k: swap[id(f)][1] for k, f in zip(v._fields, v) if hit(f)}), label))
    return out


@contextlib.contextmanager
def swapped(replaces, keep: tuple = ()):
    """Within the block, replaces() -> {original: broken} holds everywhere npvae holds an original; yields the bindings replaced.

    The modules named in `keep` are left alone. Every binding is put back in a finally; then a sweep puts back any
    binding made during the block (by a module imported inside it) that still holds a broken function."""
    for m in USED:
        importlib.import_module(m)
    pairs = replaces()
    holders, seen = [], {}  # a dict imported by several modules (estimators.BOUND) is one binding with several names
    for h in _holders({id(f): (f, g) for f, g in pairs.items()}, keep):
        if (id(h[0]), h[1]) in seen:
            seen[(id(h[0]), h[1])].append(h[4].rsplit("[", 1)[0])
        else:
            seen[(id(h[0]), h[1])] = []
            holders.append(h)
    where = [label + (f" (the same dict as {', '.join(seen[(id(c), k)])})" if seen[(id(c), k)] else "")
             for c, k, *_, label in holders]
    done = []
    try:
        for container, key, held, new, _ in holders:
            container[key] = new
            done.append((container, key, held))
        yield where
    finally:
        for container, key, held in reversed(done):
            container[key] = held
        for container, key, _, original, _ in _holders({id(g): (g, f) for f, g in pairs.items()}, keep):
            container[key] = original
