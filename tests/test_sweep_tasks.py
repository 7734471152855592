"""A sweep's chunk of training (npvae.sweeps.tasks.train_chunk) run directly, without Dask: computed again after the run
went on, it changes nothing and says where the run is."""

from npvae.store import run_dir as rd
from npvae.sweeps.tasks import train_chunk
from npvae.training.config import TrainConfig

DATA = {"search_dirs": [], "cache_dir": None, "download": False}


def test_a_chunk_computed_again_after_the_run_went_on_changes_nothing(tmp_path):
    """Dask recomputes a finished task whose result it lost with a worker it gave up on (seen when a whole LocalCluster
    was frozen with SIGSTOP and thawed): the chunk up to epoch 1 ran again on a run at epoch 2 and failed with 'resume:
    ... has trained 2 epochs, more than the 1 asked for'."""
    run = tmp_path / "run"
    config = TrainConfig(arch="64-16-2", epochs=2, batch_size=100)
    first = train_chunk(str(run), config.to_dict(), DATA)
    assert first["epoch"] == 2 and first["started_at"] == 0
    last = rd.checkpoint_path(run, "last")
    before = (last.read_bytes(), (run / "history.json").read_bytes())
    again = train_chunk(str(run), {**config.to_dict(), "epochs": 1}, DATA)
    assert (again["epoch"], again["started_at"], again["valid_bound"]) == (2, 2, first["valid_bound"])
    assert again["best_valid"] == first["best_valid"]
    assert (last.read_bytes(), (run / "history.json").read_bytes()) == before
