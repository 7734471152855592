"""The terminal's progress bars: tqdm on stderr, drawn only where stderr is a terminal (a log or CI gets none).

npvae train draws one bar per run (run_bar), counting the run's batches across all its epochs, from the batches done on
resume; its text is the epoch and the last validation bound (bar_text), its postfix the running training bound. It is
left on screen when the run ends (leave=True), above the summary. Lines printed while it is drawn go above it (above).
npvae eval draws one bar counting importance samples (progress_bar, leave=False: cleared when it closes, before the
table of numbers).
"""

from __future__ import annotations

from contextlib import contextmanager

from .config import TrainConfig
from .state import TrainState


def bar_text(epoch: int, epochs: int, valid_bounds) -> str:
    """The bar's text: the epoch being trained (the last one, once done) and the last validation bound, first, so that a
    narrow terminal cuts the counts and the running training bound (at the end of the line), not these."""
    return f"epoch {epoch}/{epochs}" + (f", last valid {valid_bounds[-1]:.3f}" if valid_bounds else "")


def run_bar(config: TrainConfig, state: TrainState, steps_per_epoch: int, enabled: bool):
    """One bar for the whole run, counting batches: it moves epoch after epoch on short epochs (digits: 13 batches in
    0.05 s), within the epoch on long ones (binarised MNIST: 500), with an ETA for the run; on resume it starts at the
    batches done. Left on screen at the end, above the summary."""
    return progress_bar(config.epochs * steps_per_epoch, bar_text(state.epoch + 1, config.epochs, state.history["valid_bound"]),
                        enabled, leave=True, initial=state.epoch * steps_per_epoch, unit="batch")


@contextmanager
def above(bar):
    """Lines written inside (an epoch line, the time estimate, a warning) go above the bar: it is cleared, then drawn again."""
    bar.clear()
    yield
    bar.refresh()


def progress_bar(total: int, desc: str, enabled: bool, leave: bool = False, **kw):
    """A tqdm bar on stderr, or a silent stand-in."""
    from tqdm.auto import tqdm

    # disable=None: tqdm switches itself off when stderr is not a terminal (logs, CI).
    return tqdm(total=total, desc=desc, leave=leave, disable=None if enabled else True, dynamic_ncols=True, **kw)
