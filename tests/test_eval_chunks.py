"""Chunked evaluation (npvae.evaluation.chunks): the same numbers in any order, on 1, 2 or 3 Dask workers, and from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from npvae.store.data import load
from npvae.evaluation.chunks import CHUNK_POINTS, chunk_rng, evaluate_chunked, local_runner
from npvae.evaluation.evaluate import point_terms_core
from npvae.vae.models import init_params, parse


@pytest.fixture(scope="module")
def model():
    data = load("digits", dtype=np.float64, seed=0, compact=True)
    arch = parse("64-16-3")
    return init_params(arch, np.random.default_rng(5)), arch, data


def test_each_chunk_draws_from_its_own_generator_and_the_terms_are_put_back_in_point_order(model):
    params, arch, data = model
    x = data.train  # 1297 points: three chunks, the last one short
    assert x.shape[0] > 2 * CHUNK_POINTS
    m = evaluate_chunked(params, arch, x, k=7, run_seed=3, eval_seed=4)
    parts = [point_terms_core(params, arch, x[i:i + CHUNK_POINTS], chunk_rng(3, 4, c), 7)["log_p"]
             for c, i in enumerate(range(0, x.shape[0], CHUNK_POINTS))]
    log_p = np.concatenate(parts)
    assert m["nll"] == float(-log_p.mean())
    assert m["nll_se"] == float(log_p.std(ddof=1) / np.sqrt(x.shape[0]))
    other = evaluate_chunked(params, arch, x, k=7, run_seed=3, eval_seed=5)
    assert other["nll"] != m["nll"]  # the eval seed changes the noise


def test_the_order_the_chunks_are_computed_in_does_not_matter(model):
    params, arch, data = model

    def backwards(params, arch, x, jobs):
        done = {j["index"]: local_runner()(params, arch, x, [j])[0] for j in reversed(jobs)}
        return [done[j["index"]] for j in jobs]

    a = evaluate_chunked(params, arch, data.train, k=5, run_seed=0)
    b = evaluate_chunked(params, arch, data.train, k=5, run_seed=0, runner=backwards)
    assert a == b


def test_bad_arguments_are_refused(model):
    params, arch, data = model
    with pytest.raises(ValueError, match="k must be"):
        evaluate_chunked(params, arch, data.test, k=0, run_seed=0)
    with pytest.raises(ValueError, match="run_seed must be"):
        evaluate_chunked(params, arch, data.test, k=2, run_seed=-1)


@pytest.mark.slow
def test_one_two_and_three_dask_workers_give_identical_numbers(model):
    pytest.importorskip("distributed")
    from npvae.evaluation.cluster import connect, dask_runner

    params, arch, data = model
    local = evaluate_chunked(params, arch, data.train, k=20, run_seed=1, x_active=data.train)
    for n in (1, 2, 3):
        seen = []
        with connect(workers=n, dashboard=False) as client:
            assert len(client.scheduler_info()["workers"]) == n
            m = evaluate_chunked(params, arch, data.train, k=20, run_seed=1, x_active=data.train,
                                 runner=dask_runner(client, seen.append))
        assert m == local, f"{n} workers"
        assert sum(seen) == data.train.shape[0] * 20


@pytest.mark.slow
def test_npvae_eval_on_workers_prints_what_it_prints_alone(tmp_path, capsys):
    pytest.importorskip("distributed")
    from npvae.cli import main

    run = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--arch", "64-16-2", "--out", str(run), "--quiet", "--no-pictures"]) == 0
    capsys.readouterr()
    from distributed import LocalCluster

    outs = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:  # an existing cluster
        for extra in ([], ["--workers", "2"], ["--scheduler", cluster.scheduler_address]):
            assert main(["eval", str(run), "--k", "30", "--split", "train", "--json", *extra]) == 0
            outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1] == outs[2]
    assert outs[0]["noise"].startswith("chunks of 500 points")
