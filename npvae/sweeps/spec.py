"""A sweep's SPEC file (TOML): a base training config, a grid of options, an evaluation, published values; all checked.

    [sweep]                      # where and how
    out = "runs/grid"            # the runs' parent directory (relative paths: to the SPEC file's directory)
    chunk_epochs = 100           # a task trains at most this many epochs, then checkpoints (default 10)
    data_dir = "../data"         # where data files are looked for first (a string or a list)

    [base]                       # any TrainConfig field (npvae train's options, with _ for -)
    dataset = "digits"
    epochs = 30

    [grid]                       # the runs: every combination of the values, in this order
    k = [1, 5]                   # an option and its values
    objective = { vae = { bound = "elbo" }, iwae = { bound = "iwae", kl = "mc" } }   # named sets of options

    [eval]                       # optional: npvae eval at these epochs (and always the last), on a whole split
    k = 5000
    split = "test"
    epochs = [1, 10]
    checkpoint = "last"          # or "best"
    seed = 0

    [[reference]]                # optional: a published test NLL, drawn and compared in the report
    where = { objective = "iwae", k = 5 }
    nll = 87.63
    source = "Burda et al. 2016, App. D"

Each grid point is one run directory under `out`, named by its grid values in grid order (`k-5_objective-iwae`), so
an edited grid keeps the names of the points it kept: `_` separates the pairs and the first `-` of a pair ends its key,
so a key's own `_` is written `.` (`batch_size = [10]` gives `batch.size-10`) and a value's `_` (an option's value or
a set's name) `+`, as any character other than letters, digits, `.`, `+` and `-` (an architecture's `:`). Two grid
keys written alike (`a_b` and `a.b`) are refused, so a name still reads back to one key per pair. A grid of more than
MAX_RUNS points is refused before it is expanded. Everything is checked here, before a run is submitted: unknown keys
and invalid values are refused with the key's name.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..store import run_dir as rd
from ..training.config import TrainConfig

SECTIONS = ("sweep", "base", "grid", "eval", "reference")
SWEEP_KEYS = ("out", "chunk_epochs", "data_dir")
EVAL_KEYS = ("k", "split", "epochs", "checkpoint", "seed", "backend")
REFERENCE_KEYS = ("where", "nll", "source")
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
MAX_RUNS = 10_000  # the most points a grid may have: counted before it is expanded (docs/sweep.md)


class SpecError(ValueError):
    """A SPEC file that cannot be run as written; the message names the file and the key."""


@dataclass(frozen=True)
class Point:
    """One grid point: its run name, its grid values (an option's value, or a named set's name), its config."""

    name: str
    values: dict
    config: TrainConfig


@dataclass(frozen=True)
class EvalSpec:
    k: int = 5000
    split: str = "test"
    epochs: tuple[int, ...] = ()
    checkpoint: str = "last"
    seed: int = 0
    backend: str | None = None  # where log p(x) runs; default: the run's backend

    def key(self, epoch: int) -> dict:
        """What identifies one evaluation of a run (npvae.sweeps.driver skips those already in evals.json)."""
        return {"epoch": epoch, "checkpoint": self.checkpoint, "split": self.split, "k": self.k, "seed": self.seed}


@dataclass(frozen=True)
class Spec:
    path: Path
    out: Path
    chunk_epochs: int
    data_dirs: tuple[Path, ...]
    grid: dict  # key -> list of values, or {set name: {option: value}}
    points: tuple[Point, ...]
    eval: EvalSpec | None
    references: tuple[dict, ...]

    def varying(self) -> list[str]:
        """The grid keys with more than one value (the report's config columns)."""
        return [k for k, v in self.grid.items() if len(v) > 1]


def load_spec(path) -> Spec:
    """Read and check a SPEC file (module docstring); SpecError names the key at fault."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise SpecError(f"cannot read the sweep SPEC {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path} is not valid TOML: {e}") from None
    return parse_spec(raw, path)


def parse_spec(raw: dict, path: Path) -> Spec:
    """The Spec of a parsed TOML document `raw` read from `path` (relative paths are taken from path's directory)."""
    where = str(path)
    _known(where, "", raw, SECTIONS)
    sweep = _table(where, "sweep", raw.get("sweep", {}))
    _known(where, "sweep.", sweep, SWEEP_KEYS)
    here = path.resolve().parent
    out = here / _string(where, "sweep.out", sweep.get("out", f"runs/{path.stem}"))
    chunk = sweep.get("chunk_epochs", 10)
    _int(where, "sweep.chunk_epochs", chunk, 1)
    dirs = sweep.get("data_dir", [])
    dirs = [dirs] if isinstance(dirs, str) else dirs
    if not isinstance(dirs, list):
        raise SpecError(f"{where}: sweep.data_dir must be a directory or a list of them, got {dirs!r}")
    data_dirs = tuple(here / _string(where, "sweep.data_dir", d) for d in dirs)

    base = _options(where, "base.", _table(where, "base", raw.get("base", {})))
    grid = _grid(where, _table(where, "grid", raw.get("grid", {})), base)
    points = _points(where, base, grid)
    ev = _eval(where, raw["eval"]) if "eval" in raw else None
    refs = raw.get("reference", [])
    if not isinstance(refs, list):
        raise SpecError(f"{where}: reference must be an array of tables ([[reference]]), got {refs!r}")
    references = tuple(_reference(where, i, r, grid) for i, r in enumerate(refs))
    for p in points:
        matched = [i for i, r in enumerate(references) if _matches(r, p)]
        if len(matched) > 1:
            raise SpecError(f"{where}: reference[{matched[0]}] and reference[{matched[1]}] both match run {p.name}")
    return Spec(path, out, chunk, data_dirs, grid, points, ev, references)


def _known(where: str, prefix: str, table: dict, allowed) -> None:
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise SpecError(f"{where}: unknown key {prefix}{unknown[0]} (known: {', '.join(allowed)})")


def _table(where: str, key: str, v) -> dict:
    if not isinstance(v, dict):
        raise SpecError(f"{where}: {key} must be a table, got {v!r}")
    return v


def _string(where: str, key: str, v) -> str:
    if not isinstance(v, str) or not v:
        raise SpecError(f"{where}: {key} must be a non-empty string, got {v!r}")
    return v


def _int(where: str, key: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise SpecError(f"{where}: {key} must be an integer >= {lo}, got {v!r}")
    return v


def _options(where: str, prefix: str, table: dict) -> dict:
    """The table, every key a TrainConfig field, every value a scalar of the field's kind (an integer taken as a float)."""
    for k in table:
        if k not in FIELDS:
            raise SpecError(f"{where}: unknown option {prefix}{k} (the options are TrainConfig's fields: {', '.join(FIELDS)})")
    return {k: _value(where, prefix + k, k, v) for k, v in table.items()}


def _value(where: str, key: str, field: str, v):
    kind = type(FIELDS[field].default)
    if field == "arch":
        kind = str
        if v == "":
            raise SpecError(f"{where}: {key} is empty (leave it out for the default architecture)")
    ok = (isinstance(v, kind) and not (kind is int and isinstance(v, bool))) or (kind is float and type(v) is int)
    if not ok:
        raise SpecError(f"{where}: {key} must be {KINDS[kind]}, got {v!r}")
    return float(v) if kind is float else v


def _count(where: str, grid: dict) -> None:
    """Refuse a grid of more than MAX_RUNS points, counted from its keys' lengths before anything is expanded."""
    sizes = {k: len(v) for k, v in grid.items() if isinstance(v, (list, dict))}  # other kinds are refused by _grid
    n = math.prod(sizes.values())
    if n > MAX_RUNS:
        shown = " x ".join(f"{k} {m:,}" for k, m in sizes.items())
        raise SpecError(f"{where}: the grid has {n:,} points ({shown}), more than the {MAX_RUNS:,} a sweep may run "
                        "(npvae.sweeps.spec.MAX_RUNS): split it into several SPECs or shorten its lists")


def _grid(where: str, grid: dict, base: dict) -> dict:
    _count(where, grid)
    seen = {}  # option -> the grid key that sets it
    forms = {}  # a key as run names write it -> the key
    out = {}
    for key, values in grid.items():
        _slug_ok(where, f"grid.{key}", key, "a grid key")
        form = _key_form(key)
        if form in forms:
            raise SpecError(f"{where}: grid.{forms[form]} and grid.{key} are both written {form} in run names "
                            "(a key's _ is written .): rename one")
        forms[form] = key
        if isinstance(values, list):
            if key not in FIELDS:
                raise SpecError(f"{where}: unknown option grid.{key}: a list of values needs a TrainConfig field "
                                f"(a named set of options is a table: {key} = {{ name = {{ option = value }} }})")
            options = {key}
            if not values:
                raise SpecError(f"{where}: grid.{key} is an empty list")
            values = [_value(where, f"grid.{key}", key, v) for v in values]
            if len(set(map(repr, values))) != len(values):
                raise SpecError(f"{where}: grid.{key} repeats a value: {values!r}")
        elif isinstance(values, dict):
            if key in FIELDS:
                raise SpecError(f"{where}: grid.{key} is an option, so its values are a list, got a table")
            if not values:
                raise SpecError(f"{where}: grid.{key} is an empty table")
            options = set()
            for name, opts in values.items():
                _slug_ok(where, f"grid.{key}.{name}", name)
                options |= set(_table(where, f"grid.{key}.{name}", opts))
            values = {n: _options(where, f"grid.{key}.{n}.", o) for n, o in values.items()}
        else:
            raise SpecError(f"{where}: grid.{key} must be a list of values or a table of named option sets, got {values!r}")
        for opt in sorted(options):
            if opt in base:
                raise SpecError(f"{where}: grid.{key} sets {opt}, which [base] sets too: set it in one place")
            if opt in seen:
                raise SpecError(f"{where}: grid.{key} sets {opt}, which grid.{seen[opt]} sets too")
            seen[opt] = key
        out[key] = values
    return out


SLUG = re.compile(r"[^A-Za-z0-9.+-]")  # what a run name writes as "+" in a value
NAME_OK = re.compile(r"[A-Za-z0-9._+-]+")  # a grid key or a set's name


def _slug_ok(where: str, key: str, name: str, what: str = "a set's name") -> None:
    if not NAME_OK.fullmatch(name):
        raise SpecError(f"{where}: {key}: {what} is used in run names: letters, digits, '_', '.', '+', '-' only")


def _key_form(key: str) -> str:
    """A grid key as run names write it: its _ as . (run names separate their key-value pairs with _)."""
    return key.replace("_", ".")


def _slug(v) -> str:
    s = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return SLUG.sub("+", s)


def _points(where: str, base: dict, grid: dict) -> tuple[Point, ...]:
    keys = list(grid)
    choices = [list(grid[k]) for k in keys]  # a list's values, or a table's set names
    points, names = [], {}
    for combo in itertools.product(*choices):
        options = dict(base)
        for key, choice in zip(keys, combo):
            options.update(grid[key][choice] if isinstance(grid[key], dict) else {key: choice})
        name = "_".join(f"{_key_form(key)}-{_slug(c)}" for key, c in zip(keys, combo)) or "run"
        if name.lower() in names:  # lower: one directory on file systems that ignore case
            raise SpecError(f"{where}: grid points {names[name.lower()]} and {combo} have the same run name {name} "
                            "(letter case aside)")
        names[name.lower()] = combo
        try:
            config = TrainConfig(**options)
        except (TypeError, ValueError) as e:
            raise SpecError(f"{where}: run {name}: {e}") from None
        points.append(Point(name, dict(zip(keys, combo)), config))
    return tuple(points)


def _eval(where: str, raw) -> EvalSpec:
    from ..backends import BACKENDS

    ev = _table(where, "eval", raw)
    _known(where, "eval.", ev, EVAL_KEYS)
    d = EvalSpec()
    k = _int(where, "eval.k", ev.get("k", d.k), 1)
    split = ev.get("split", d.split)
    if split not in ("train", "valid", "test"):
        raise SpecError(f"{where}: eval.split must be train, valid or test, got {split!r}")
    epochs = ev.get("epochs", [])
    if not isinstance(epochs, list):
        raise SpecError(f"{where}: eval.epochs must be a list of epochs, got {epochs!r}")
    epochs = tuple(sorted({_int(where, "eval.epochs", e, 1) for e in epochs}))
    checkpoint = ev.get("checkpoint", d.checkpoint)
    if checkpoint not in ("last", "best"):
        raise SpecError(f"{where}: eval.checkpoint must be last or best, got {checkpoint!r}")
    seed = _int(where, "eval.seed", ev.get("seed", d.seed), 0)
    backend = ev.get("backend")
    if backend is not None and backend not in BACKENDS:
        raise SpecError(f"{where}: eval.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return EvalSpec(k, split, epochs, checkpoint, seed, backend)


def _reference(where: str, i: int, r, grid: dict) -> dict:
    key = f"reference[{i}]"
    r = _table(where, key, r)
    _known(where, key + ".", r, REFERENCE_KEYS)
    match = _table(where, key + ".where", r.get("where", {}))
    for k, v in match.items():
        if k not in grid:
            raise SpecError(f"{where}: {key}.where.{k} is not a grid key (grid keys: {', '.join(grid) or 'none'})")
        if not any(_same(v, g) for g in grid[k]):
            raise SpecError(f"{where}: {key}.where.{k} = {v!r} is not one of grid.{k}'s values")
    nll = r.get("nll")
    if isinstance(nll, bool) or not isinstance(nll, (int, float)) or not math.isfinite(nll):
        raise SpecError(f"{where}: {key}.nll must be a number (a published test NLL in nats), got {nll!r}")
    source = r.get("source", "")
    if not isinstance(source, str):
        raise SpecError(f"{where}: {key}.source must be a string, got {source!r}")
    return {"where": dict(match), "nll": float(nll), "source": source}


def _same(a, b) -> bool:
    """Equal and of the same kind: true is not 1 (an integer and a float are one kind)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _matches(reference: dict, point: Point) -> bool:
    return all(k in point.values and _same(point.values[k], v) for k, v in reference["where"].items())


def references_for(spec: Spec, point: Point) -> list[dict]:
    """The references whose `where` the point matches."""
    return [r for r in spec.references if _matches(r, point)]


SWEEP_MARKER = ".npvae-sweep"  # in sweep.out: a directory npvae's sweep made


def claim_out(spec: Spec) -> Path:
    """spec.out for a sweep to write into (its runs, lock, pending rows, report): new, empty, or a sweep's (the marker, a
    report, the sweep's lock or one of its run directories), never a directory of the user's own files (RunDirError)."""
    ours = ("report.md", "report.csv", "report.png", ".lock", ".pending", *(p.name for p in spec.points))
    return rd.claim_dir(spec.out, SWEEP_MARKER, "sweep.out", "an npvae sweep directory", ours=ours)

