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
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path

from ..store import run_dir as rd
from .spec import Point, Spec, SpecError

EVALS = "evals.json"  # a run's evaluations: a list of rows, one per (epoch, checkpoint, split, k, seed)
RESUBMITS = 3  # a run's tasks cancelled by Dask (the client lost the scheduler, most often) submitted again, at most


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


def read_evals(run_dir: Path) -> list:
    p = Path(run_dir) / EVALS
    return json.loads(p.read_text()) if p.exists() else []


def _has_eval(run: Run, key: dict) -> bool:
    return any(all(r.get(k) == v for k, v in key.items()) for r in run.evals)


def plan(spec: Spec, data: dict) -> list[Run]:
    """Check every grid point against its data and its run directory (SpecError naming the run), before any task."""
    from .tasks import dataset_for
    from ..training.loop import preflight, read_meta

    runs = []
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
        last = rd.checkpoint_path(d, "last")
        meta = read_meta(last) if last.exists() else None
        if meta is not None:
            saved, want = meta["config"], p.config.to_dict()
            diff = [k for k in want if k not in ("epochs", "backend") and saved.get(k) != want[k]]
            if diff:
                shown = ", ".join(f"{k} = {saved.get(k)!r} there, {want[k]!r} here" for k in diff)
                raise SpecError(f"{spec.path}: run {p.name}: {d} was trained with another config ({shown}); "
                                "restore the SPEC, or give sweep.out another directory")
        run = Run(p, d, meta["epoch"] if meta else 0, read_evals(d))
        if spec.eval is not None:
            if dataset.split(spec.eval.split).shape[0] == 0:
                raise SpecError(f"{spec.path}: run {p.name}: eval.split = {spec.eval.split!r} has no points")
            # the end: the target, or the epoch of a run trained past it (a SPEC whose epochs went down)
            end = max(run.target, run.done)
            run.eval_epochs = tuple(sorted({e for e in spec.eval.epochs if e <= end} | {end}))
        runs.append(run)
    return runs


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
    return [r for r in runs if chunk_end(r, spec.chunk_epochs) is not None or eval_due(spec, r)]


def run_sweep(spec: Spec, data: dict, *, scheduler: str | None = None, workers: int | None = None, dashboard: bool = True,
              progress: bool = True, log=print, on_event=None) -> dict:
    """Train and evaluate every run of spec to its end; returns {"runs", "tasks", "failed": {name: why}}.

    data: npvae.store.data.load's search_dirs, cache_dir, download (the same on every worker). on_event(kind, run, result,
    client): called after each finished task ("train" or "eval"), for logs and tests.
    """
    spec.out.mkdir(parents=True, exist_ok=True)
    with rd.RunLock(spec.out):
        runs = plan(spec, data)
        for r in runs:
            gone = missed(spec, r)
            if gone:
                log(f"npvae sweep: note: {r.point.name} is past epoch(s) {gone} without their evaluation; "
                    "they are skipped (a checkpoint holds only its latest epoch)")
        work = todo(spec, runs)
        if not work:
            log(f"npvae sweep: nothing to do: all {len(runs)} runs are finished" + (" and evaluated" if spec.eval else ""))
            return {"runs": len(runs), "tasks": 0, "failed": {}}
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
    tasks = 0

    def advance(run: Run) -> None:
        nonlocal tasks
        if eval_due(spec, run):
            futures, held, finish = _submit_eval(spec, data, run, client)
            group = {"left": set(futures), "futures": futures, "held": held, "finish": finish, "t0": time.time()}
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
        """Cancel the run's other tasks in flight (an evaluation's other chunks)."""
        for f in [f for f, (r, _, _) in inflight.items() if r is run]:
            inflight.pop(f).cancel()

    def fail(run: Run, why: str) -> None:
        """Record why the run failed, and drop its other tasks in flight."""
        run.failed = why
        drop(run)
        log(f"npvae sweep: {run.point.name} failed: {why}")
        lines.failed(run)

    def guarded(run: Run, step):
        """step()'s value; an exception in the driver's own part of a run (loading a checkpoint, summarising) fails
        that run only (run.failed says so)."""
        try:
            return step()
        except Exception as e:  # noqa: BLE001 (recorded, reported, and the sweep's exit code says so)
            fail(run, f"{type(e).__name__}: {e}")

    def result_of(f, run: Run, kind: str, what) -> dict:
        """A finished train task's result, or a finished evaluation's row (its chunks summarised and written)."""
        if kind == "train":
            result = f.result()
            run.done, run.valid = result["epoch"], result["valid_bound"]
            return result
        row = what["finish"](client.gather(what["futures"]), time.time() - what["t0"])
        run.evals = read_evals(run.dir)
        return row

    for run in work:
        guarded(run, lambda: advance(run))
    while inflight:
        try:
            wait(list(inflight), timeout=1.0, return_when="FIRST_COMPLETED")
        except (TimeoutError, asyncio.TimeoutError, CancelledError):  # nothing finished within the second, or a loss
            pass
        lines.poll([r for r, kind, _ in inflight.values() if kind == "train"])
        for f in [f for f in inflight if f.status in ("finished", "error", "cancelled")]:  # not "lost": Dask recomputes it
            if f not in inflight:  # dropped with its run's other tasks
                continue
            run, kind, what = inflight.pop(f)
            if f.status == "cancelled" and run.resubmitted < RESUBMITS:  # safe: a chunk resumes, an evaluation restarts
                drop(run)
                run.resubmitted += 1
                log(f"npvae sweep: {run.point.name}: Dask cancelled its {kind} task; submitting it again")
                guarded(run, lambda: advance(run))
                continue
            if f.status != "finished":  # an error in the task, or a task Dask gave up on
                e = f.exception() if f.status == "error" else None
                fail(run, f"{type(e).__name__}: {e}" if e is not None else f"its task was {f.status} by Dask")
                continue
            if kind == "eval":
                what["left"].discard(f)
                if what["left"]:
                    continue
            result = guarded(run, lambda: result_of(f, run, kind, what))
            if run.failed:
                continue
            lines.update(run, kind, result)
            if on_event is not None:
                on_event(kind, run, result, client)
            guarded(run, lambda: advance(run))
        f = None  # hold no finished future: Dask would recompute a lost one for nothing
    lines.close()
    failed = {r.point.name: r.failed for r in runs if r.failed}
    return {"runs": len(runs), "tasks": tasks, "failed": failed}


def _submit_eval(spec: Spec, data: dict, run: Run, client):
    """The chunk futures of the run's evaluation at run.done, and the function that turns their parts into its row."""
    from ..backends import resolve
    from ..evaluation.cluster import submit_eval
    from ..evaluation.chunks import chunk_jobs, eval_inputs, finish
    from ..vae.models import unflatten
    from .tasks import dataset_for
    from ..store.atomic import write_json
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

    def finish_row(parts, seconds) -> dict:
        m = finish(params, arch, x, parts, ev.k, seeds, x_active)
        row = {**ev.key(run.done), "checkpoint_epoch": state.epoch, "points": points, "n_points": m["n_points"],
               **{k: m[k] for k in ("nll", "nll_se", "elbo", "elbo_se", "recon", "kl", "active_units", "active_units_points")},
               "noise": m["noise"], "backend": backend, "wall_seconds": seconds,  # submission to the last chunk, queueing included
               "train_seconds": float(sum(state.history["seconds"]))}
        with rd.RunLock(run.dir):
            write_json(run.dir / EVALS, read_evals(run.dir) + [row])
        return row

    return futures, held, finish_row
