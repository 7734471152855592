"""`npvae sweep`: every run of a grid (npvae.sweeps.spec) trained in chunks of epochs on a Dask cluster, and evaluated.

The driver (this process) holds the sweep's lock (`out/.lock`: one sweep per directory) and keeps one task in
flight per run: a chunk of training (npvae.sweeps.tasks.train_chunk, up to the next multiple of chunk_epochs, the
next evaluation epoch or the end), or the evaluation of the run's checkpoint at an evaluation epoch, its chunks of
points spread over the workers (npvae.evaluation.chunks, npvae.evaluation.cluster). The run's next chunk waits for its evaluation.

What it survives: a worker killed mid-chunk costs at most that chunk (Dask reruns the task on another worker, and it
resumes from the run's last checkpoint, bit for bit); the driver killed, or Ctrl-C, costs the chunks in flight, and
the same command continues: finished runs and evaluations are skipped, an edited grid adds only its new points. On
an external cluster (--scheduler) a chunk in flight is not stopped with the driver (Dask does not interrupt a running
task): it finishes its chunk, holding its run's lock, and the rerun's chunk of that run waits for the lock (up to
npvae.sweeps.tasks.LOCK_WAIT_S, then the run is reported failed; the next rerun continues it). A task Dask cancels
(the client lost the scheduler, most often) is submitted again, up to RESUBMITS times; an exception in the driver's
own part of a run (loading its checkpoint, summarising its evaluation) fails that run only. A run whose saved config
differs from its grid point (other than in epochs and backend) is refused before anything starts.

Every write of the driver into a run directory (an evaluation's row in evals.json, the repair of a best checkpoint)
holds the run's lock, and waits for it as a chunk does (LOCK_WAIT_S, tried every LOCK_POLL_S, npvae.sweeps.tasks)
when another process holds it (a user's `npvae train --resume`), the other runs going on meanwhile. A row that still
cannot be written (the wait ran out, or evals.json is damaged) is kept in out/.pending/<run>.json, which the next
sweep writes into evals.json: nothing computed is lost. A run whose evals.json (or last checkpoint) cannot be read is
left as it is and reported failed, naming the file; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path

from ..store import run_dir as rd
from ..store.atomic import write_json
from . import tasks as _tasks
from .spec import Point, Spec, SpecError, claim_out

EVALS = "evals.json"  # a run's evaluations: a list of rows, one per (epoch, checkpoint, split, k, seed)
PENDING = ".pending"  # out/.pending/<run>.json: rows not yet in their run's evals.json (the next sweep writes them there)
ROW_KEY = ("epoch", "checkpoint", "split", "k", "seed")  # what identifies a row (spec.EvalSpec.key)
ROW_NUMBERS = ("nll", "nll_se", "elbo", "kl", "active_units")  # what the report reads of a row
RESUBMITS = 3  # a run's tasks cancelled by Dask (the client lost the scheduler, most often) submitted again, at most


class EvalsDamaged(ValueError):
    """A run's evals.json (or a pending file) that cannot be read as rows; the message names the file and what to do."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path} is damaged ({reason}): the run is left as it is; repair or restore that file, or move it "
                         "away (the next sweep then makes the evaluations it still can)")


@dataclass
class Run:
    point: Point
    dir: Path
    done: int  # epochs in its last checkpoint
    evals: list = field(default_factory=list)  # rows of evals.json
    eval_epochs: tuple = ()  # the epochs to evaluate at (the spec's, up to the run's end, and the end)
    failed: str | None = None
    valid: float | None = None  # the latest validation bound
    resubmitted: int = 0  # tasks submitted again after Dask cancelled them

    @property
    def target(self) -> int:
        return self.point.config.epochs


def _read_rows(p: Path) -> list:
    """The rows in file p ([] if there is none); EvalsDamaged, naming p, if it is not a list of evaluation rows."""
    if not p.exists():
        return []
    try:
        rows = json.loads(p.read_bytes())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise EvalsDamaged(p, f"not JSON: {e}") from None
    if not isinstance(rows, list):
        raise EvalsDamaged(p, f"a JSON {type(rows).__name__}, not a list of rows")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise EvalsDamaged(p, f"row {i} is not a table")
        missing = [k for k in ROW_KEY + ROW_NUMBERS if k not in r]
        if missing:
            raise EvalsDamaged(p, f"row {i} has no {missing[0]}")
        bad = [k for k in ("epoch",) + ROW_NUMBERS if isinstance(r[k], bool) or not isinstance(r[k], (int, float))]
        if bad:
            raise EvalsDamaged(p, f"row {i}'s {bad[0]} is not a number")
        if not isinstance(r["epoch"], int):
            raise EvalsDamaged(p, f"row {i}'s epoch is not an integer")
    return rows


def read_evals(run_dir: Path) -> list:
    """The rows of run_dir's evals.json; EvalsDamaged, naming the file, if it cannot be read as rows."""
    return _read_rows(Path(run_dir) / EVALS)


def pending_path(out: Path, name: str) -> Path:
    return Path(out) / PENDING / f"{name}.json"


def read_pending(out: Path, name: str, run_dir: Path) -> list:
    """The rows kept for run `name` (not yet in its evals.json); none for a directory that is no run any more."""
    p = pending_path(out, name)
    return _read_rows(p) if p.exists() and rd.is_run(run_dir) else []


def _merged(rows: list, more: list) -> list:
    """rows, then those of more whose evaluation (ROW_KEY) rows lack."""
    have = {tuple(r.get(k) for k in ROW_KEY) for r in rows}
    return rows + [r for r in more if tuple(r.get(k) for k in ROW_KEY) not in have]


def append_eval(run_dir: Path, row: dict) -> None:
    """Add row to run_dir's evals.json, holding the run's lock (RunLocked at once if another process holds it)."""
    with rd.RunLock(run_dir):
        write_json(Path(run_dir) / EVALS, read_evals(run_dir) + [row])


def keep_pending(out: Path, name: str, row: dict) -> Path:
    """Keep a row its run's evals.json could not take in out/.pending/<name>.json (the sweep's own directory)."""
    p = pending_path(out, name)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json(p, _merged(_read_rows(p), [row]))
    return p


def merge_pending(out: Path, run_dir: Path, name: str) -> int:
    """Write the rows kept for run `name` into its evals.json (under its lock: RunLocked if held); how many were new."""
    p = pending_path(out, name)
    rows = _read_rows(p)
    with rd.RunLock(run_dir):
        have = read_evals(run_dir)
        new = _merged(have, rows)[len(have):]
        if new:
            write_json(Path(run_dir) / EVALS, have + new)
    p.unlink()
    return len(new)


def _holder(run_dir: Path) -> str:
    """The pid in run_dir's lock file (its holder's), or "unknown"."""
    try:
        return (Path(run_dir) / rd.LOCK).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _has_eval(run: Run, key: dict) -> bool:
    return any(all(r.get(k) == v for k, v in key.items()) for r in run.evals)


def plan(spec: Spec, data: dict) -> list[Run]:
    """Check every grid point against its data and its run directory (SpecError naming the run), before any task.

    A run whose last checkpoint or evals.json cannot be read is returned failed (Run.failed naming the file): it gets no
    task, the others go on."""
    from .tasks import dataset_for
    from ..training.loop import preflight, read_meta

    runs, probes = [], {}
    for p in spec.points:
        try:
            dataset = dataset_for(p.config, data)
            preflight(p.config, dataset)
        except (ValueError, OSError) as e:
            raise SpecError(f"{spec.path}: run {p.name}: {e}") from None
        d = spec.out / p.name
        if d.exists() and not d.is_dir():
            raise SpecError(f"{spec.path}: run {p.name}: {d} exists and is not a directory")
        if d.exists() and not rd.is_run(d) and any(d.iterdir()):
            raise SpecError(f"{spec.path}: run {p.name}: {d} is not an npvae run directory; move it, or change sweep.out")
        last, failed = rd.checkpoint_path(d, "last"), None
        try:
            meta = read_meta(last) if last.exists() else None
        except (ValueError, OSError) as e:  # a damaged checkpoint (its message names it): this run only
            meta, failed = None, f"{e}: the run is left as it is; restore that file"
        if meta is not None:
            saved, want = meta["config"], p.config.to_dict()
            diff = [k for k in want if k not in ("epochs", "backend") and saved.get(k) != want[k]]
            if diff:
                shown = ", ".join(f"{k} = {saved.get(k)!r} there, {want[k]!r} here" for k in diff)
                raise SpecError(f"{spec.path}: run {p.name}: {d} was trained with another config ({shown}); "
                                "restore the SPEC, or give sweep.out another directory")
        try:
            evals = _merged(read_evals(d), read_pending(spec.out, p.name, d))
        except EvalsDamaged as e:
            evals, failed = [], failed or str(e)
        run = Run(p, d, meta["epoch"] if meta else 0, evals, failed=failed)
        if spec.eval is not None:
            if dataset.split(spec.eval.split).shape[0] == 0:
                raise SpecError(f"{spec.path}: run {p.name}: eval.split = {spec.eval.split!r} has no points")
            _check_eval_cost(spec, p, dataset, probes)
            # the end: the target, or the epoch of a run trained past it (a SPEC whose epochs went down)
            end = max(run.target, run.done)
            run.eval_epochs = tuple(sorted({e for e in spec.eval.epochs if e <= end} | {end}))
        runs.append(run)
    return runs


def _check_eval_cost(spec: Spec, point, dataset, probes: dict) -> None:
    """Refuse (SpecError) a run whose evaluation would take longer than npvae.evaluation.cost allows, before anything
    trains: timed on a probe of a freshly initialised model of the run's architecture (one probe per architecture)."""
    import numpy as np

    from ..backends import resolve
    from ..evaluation.cost import check_eval_cost, seconds_per_pair
    from ..training.loop import preflight
    from ..vae import models

    arch, x = preflight(point.config, dataset), dataset.split(spec.eval.split)
    key = (arch, point.config.dtype, resolve(spec.eval.backend or point.config.backend))
    if key not in probes:
        params = models.init_params(arch, np.random.default_rng(0), point.config.dtype)
        probes[key] = seconds_per_pair(params, arch, x, key[2])
    try:
        check_eval_cost(f"run {point.name}: evaluating k={spec.eval.k} importance samples on {x.shape[0]} points",
                        probes[key] * x.shape[0] * spec.eval.k, "lower eval.k")
    except ValueError as e:
        raise SpecError(f"{spec.path}: {e}") from None


def chunk_end(run: Run, chunk: int) -> int | None:
    """The epoch the run's next chunk trains to: the next multiple of chunk, evaluation epoch, or the end; None: none."""
    if run.done >= run.target:
        return None
    ends = [(run.done // chunk + 1) * chunk, run.target] + [e for e in run.eval_epochs if e > run.done]
    return min(ends)


def eval_due(spec: Spec, run: Run) -> bool:
    return spec.eval is not None and run.done in run.eval_epochs and not _has_eval(run, spec.eval.key(run.done))


def missed(spec: Spec, run: Run) -> list[int]:
    """Evaluation epochs the run is already past without an evaluation (they cannot be made any more)."""
    if spec.eval is None:
        return []
    return [e for e in run.eval_epochs if e < run.done and not _has_eval(run, spec.eval.key(e))]


def todo(spec: Spec, runs: list[Run]) -> list[Run]:
    return [r for r in runs if not r.failed and (chunk_end(r, spec.chunk_epochs) is not None or eval_due(spec, r))]


def run_sweep(spec: Spec, data: dict, *, scheduler: str | None = None, workers: int | None = None, dashboard: bool = True,
              progress: bool = True, log=print, on_event=None) -> dict:
    """Train and evaluate every run of spec to its end; returns {"runs", "tasks", "failed": {name: why}}.

    data: npvae.store.data.load's search_dirs, cache_dir, download (the same on every worker). on_event(kind, run, result,
    client): called after each finished task ("train" or "eval"), for logs and tests.
    """
    claim_out(spec)
    with rd.RunLock(spec.out):
        runs = plan(spec, data)
        for r in runs:
            if r.failed:
                log(f"npvae sweep: {r.point.name} is not run: {r.failed}")
                continue
            if pending_path(spec.out, r.point.name).exists() and rd.is_run(r.dir):
                try:
                    n = merge_pending(spec.out, r.dir, r.point.name)
                    log(f"npvae sweep: {r.point.name}: wrote {n} kept evaluation row(s) into its {EVALS}")
                except rd.RunLocked:
                    log(f"npvae sweep: note: {r.point.name} is locked by another process (pid {_holder(r.dir)}); its kept "
                        f"evaluation rows stay in {pending_path(spec.out, r.point.name)} for a later sweep")
            gone = missed(spec, r)
            if gone:
                log(f"npvae sweep: note: {r.point.name} is past epoch(s) {gone} without their evaluation; "
                    "they are skipped (a checkpoint holds only its latest epoch)")
        work = todo(spec, runs)
        failed = {r.point.name: r.failed for r in runs if r.failed}
        if not work:
            log(f"npvae sweep: nothing to do: all {len(runs) - len(failed)} runs" + (" that can go on" if failed else "")
                + " are finished" + (" and evaluated" if spec.eval else ""))
            return {"runs": len(runs), "tasks": 0, "failed": failed}
        from ..evaluation.cluster import connect, dashboard as dashboard_link

        with connect(scheduler, workers, dashboard) as client:
            log(f"npvae sweep: {len(runs)} runs, {len(work)} to do, in {spec.out}; Dask dashboard: {dashboard_link(client)}")
            return _drive(spec, data, runs, work, client, progress, log, on_event)


def _drive(spec, data, runs, work, client, progress, log, on_event) -> dict:
    from distributed import wait

    from .progress import Lines
    from .tasks import train_chunk

    lines = Lines(runs, progress, log)
    inflight = {}  # future -> (run, kind, what)
    waiting = {}  # run name -> (run, step, then, what, on_timeout, deadline, next try): a step that found the run locked
    tasks = 0

    def advance(run: Run) -> None:
        nonlocal tasks
        if eval_due(spec, run):
            futures, held, summarise = _submit_eval(spec, data, run, client)  # RunLocked before any submission
            group = {"left": set(futures), "futures": futures, "held": held, "summarise": summarise, "t0": time.time()}
            inflight.update({f: (run, "eval", group) for f in futures})
        else:
            end = chunk_end(run, spec.chunk_epochs)
            if end is None:
                lines.finished(run)
                return
            config = dataclasses.replace(run.point.config, epochs=end).to_dict()
            f = client.submit(train_chunk, str(run.dir), config, data, pure=False,
                              key=f"train-{run.point.name}-e{end}-{time.time_ns()}")
            inflight[f] = (run, "train", end)
        tasks += 1

    def drop(run: Run) -> None:
        """Cancel the run's other tasks in flight (an evaluation's other chunks), and a step waiting for its lock."""
        waiting.pop(run.point.name, None)
        for f in [f for f, (r, _, _) in inflight.items() if r is run]:
            inflight.pop(f).cancel()

    def fail(run: Run, why: str) -> None:
        """Record why the run failed, and drop its other tasks in flight."""
        run.failed = why
        drop(run)
        log(f"npvae sweep: {run.point.name} failed: {why}")
        lines.failed(run)

    def why_of(e: Exception) -> str:
        return str(e) if isinstance(e, (EvalsDamaged, _Kept)) else f"{type(e).__name__}: {e}"

    def guarded(run: Run, step):
        """step()'s value; an exception in the driver's own part of a run (loading a checkpoint, summarising) fails
        that run only (run.failed says so)."""
        try:
            return step()
        except Exception as e:  # noqa: BLE001 (recorded, reported, and the sweep's exit code says so)
            fail(run, why_of(e))

    def attempt(run: Run, step, then=None, what: str = "its next task", on_timeout=None, deadline=None) -> None:
        """step(), then then(its value), as guarded; a step that finds the run's lock held (another process writes the
        run: a user's npvae train --resume, a chunk of an earlier attempt) is tried again every LOCK_POLL_S by the
        loop below, the other runs going on, for up to LOCK_WAIT_S, as a chunk waits (npvae.sweeps.tasks); then
        on_timeout(why) (which keeps what was computed) gives the run's failure."""
        try:
            value = step()
        except rd.RunLocked:
            now, first = time.time(), deadline is None
            deadline = now + _tasks.LOCK_WAIT_S if first else deadline
            if now <= deadline:
                waiting[run.point.name] = (run, step, then, what, on_timeout, deadline, now + _tasks.LOCK_POLL_S)
                if first:
                    log(f"npvae sweep: {run.point.name}: {run.dir} is locked by another process (pid {_holder(run.dir)}); "
                        f"{what} waits for it, up to {_tasks.LOCK_WAIT_S:g} s")
                return
            why = (f"{run.dir} stayed locked by another process (pid {_holder(run.dir)}) for {_tasks.LOCK_WAIT_S:g} s; "
                   "the next sweep continues the run")
            if on_timeout is not None:
                try:
                    why = on_timeout(why)
                except Exception as e:  # noqa: BLE001 (in the failure's message)
                    why = f"{why}; what it computed could not be kept either ({why_of(e)})"
            fail(run, why)
            return
        except Exception as e:  # noqa: BLE001 (as guarded)
            fail(run, why_of(e))
            return
        waiting.pop(run.point.name, None)
        if then is not None:
            guarded(run, lambda: then(value))

    def next_task(run: Run) -> None:
        attempt(run, lambda: advance(run))

    def train_done(f, run: Run) -> None:
        result = guarded(run, f.result)
        if run.failed:
            return
        run.done, run.valid = result["epoch"], result["valid_bound"]
        lines.update(run, "train", result)
        if on_event is not None:
            on_event("train", run, result, client)
        next_task(run)

    def eval_done(run: Run, group: dict) -> None:
        """Summarise the evaluation's chunks into its row, and write the row into evals.json (waiting for the lock)."""
        row = guarded(run, lambda: group["summarise"](client.gather(group["futures"]), time.time() - group["t0"]))
        if run.failed:
            return
        name, epoch = run.point.name, row["epoch"]

        def write():
            try:
                append_eval(run.dir, row)
            except rd.RunLocked:
                raise
            except Exception as e:  # evals.json damaged, or the disk: the row is kept in the sweep's directory
                kept = keep_pending(spec.out, name, row)
                raise _Kept(f"{why_of(e)}; its evaluation row (epoch {epoch}) is kept in {kept}, and the next sweep "
                            f"writes it into {EVALS}") from None

        def timeout(why: str) -> str:
            kept = keep_pending(spec.out, name, row)
            return f"{why}; its evaluation row (epoch {epoch}) is kept in {kept}, and the next sweep writes it into {EVALS}"

        def written(_):
            run.evals = _merged(run.evals, [row])
            lines.update(run, "eval", row)
            if on_event is not None:
                on_event("eval", run, row, client)
            next_task(run)

        attempt(run, write, written, f"its evaluation row (epoch {epoch})", timeout)

    for run in runs:
        if run.failed:  # by plan: a damaged file
            lines.failed(run)
    try:
        for run in work:
            next_task(run)
        while inflight or waiting:
            if inflight:
                try:
                    wait(list(inflight), timeout=1.0, return_when="FIRST_COMPLETED")
                except (TimeoutError, asyncio.TimeoutError, CancelledError):  # nothing finished within the second, or a loss
                    pass
            else:
                time.sleep(max(0.0, min(1.0, min(w[-1] for w in waiting.values()) - time.time())))
            for name in [n for n, w in waiting.items() if w[-1] <= time.time()]:
                if name in waiting:  # not dropped meanwhile
                    attempt(*waiting[name][:-1])
            lines.poll([r for r, kind, _ in inflight.values() if kind == "train"])
            done = [f for f in inflight if f.status in ("finished", "error", "cancelled")]  # not "lost": Dask recomputes it
            for f in done:
                if f not in inflight:  # dropped with its run's other tasks
                    continue
                run, kind, what = inflight.pop(f)
                if f.status == "cancelled" and run.resubmitted < RESUBMITS:  # safe: a chunk resumes, an evaluation restarts
                    drop(run)
                    run.resubmitted += 1
                    log(f"npvae sweep: {run.point.name}: Dask cancelled its {kind} task; submitting it again")
                    next_task(run)
                    continue
                if f.status != "finished":  # an error in the task, or a task Dask gave up on
                    e = f.exception() if f.status == "error" else None
                    fail(run, f"{type(e).__name__}: {e}" if e is not None else f"its task was {f.status} by Dask")
                    continue
                if kind == "train":
                    train_done(f, run)
                    continue
                what["left"].discard(f)
                if not what["left"]:
                    eval_done(run, what)
            done = f = None  # hold no finished future: Dask would recompute a lost one for nothing
    except BaseException:  # Ctrl-C, a lost scheduler: a row still waiting for its run's lock is kept (out/.pending)
        for run, _, _, _, on_timeout, *_ in list(waiting.values()):
            if on_timeout is not None:
                with contextlib.suppress(Exception):
                    on_timeout("")
        raise
    lines.close()
    failed = {r.point.name: r.failed for r in runs if r.failed}
    return {"runs": len(runs), "tasks": tasks, "failed": failed}


class _Kept(RuntimeError):
    """A row that could not be written into its run's evals.json and was kept in out/.pending (the message says where)."""


def _submit_eval(spec: Spec, data: dict, run: Run, client):
    """The chunk futures of the run's evaluation at run.done, and the function that turns their parts into its row.

    RunLocked, before anything is submitted, when the best checkpoint must be repaired and another process holds the run."""
    from ..backends import resolve
    from ..evaluation.cluster import submit_eval
    from ..evaluation.chunks import chunk_jobs, eval_inputs, finish
    from ..vae.models import unflatten
    from .tasks import dataset_for
    from ..training.loop import load_state, read_meta

    ev = spec.eval
    if ev.checkpoint == "best":  # best one epoch behind last after a kill between the two writes: restored first
        with rd.RunLock(run.dir):
            rd.repair(run.dir, read_meta)
    config, arch, state = load_state(rd.checkpoint_path(run.dir, ev.checkpoint))
    x, x_active, points = eval_inputs(dataset_for(config, data), ev.split, ev.seed)
    params = unflatten(arch, state.params)
    backend = resolve(ev.backend or config.backend)
    seeds = (config.seed, ev.seed)
    jobs = chunk_jobs(x.shape[0], ev.k, seeds, backend)
    futures, held = submit_eval(client, params, arch, x, jobs)

    def summarise(parts, seconds) -> dict:
        m = finish(params, arch, x, parts, ev.k, seeds, x_active)
        return {**ev.key(run.done), "checkpoint_epoch": state.epoch, "points": points, "n_points": m["n_points"],
                **{k: m[k] for k in ("nll", "nll_se", "elbo", "elbo_se", "recon", "kl", "active_units", "active_units_points")},
                "noise": m["noise"], "backend": backend, "wall_seconds": seconds,  # submission to the last chunk, queueing included
                "train_seconds": float(sum(state.history["seconds"]))}

    return futures, held, summarise
