"""`npvae explain TOPIC`: the classic questions about VAEs answered by experiments with npvae's own code.

Each topic writes PNGs and `<topic>.json` (the numbers it plots) into out_dir: new, empty, or one explain wrote before,
never a directory of the user's own files. docs/theory.md says what each shows. `quick=True` runs in seconds (for
tests); the full runs take up to a minute or two on one core (npvae.explain.cost estimates one before it starts).
Every random draw comes from a Generator seeded by `seed`. Nothing is printed: messages (a data set that
was not found, say) are returned in the result's "notes".
"""

from __future__ import annotations

import importlib
import time

import numpy as np

# topic -> (module, the question it answers)
_TOPICS = {
    "posterior": ("posterior", "Does maximising the ELBO pull q(z|x) to the prior or to the posterior? (ELBO surgery, diagonal q)"),
    "iwae": ("iwae", "What do K importance samples buy (IWAE), why sample z from the encoder, and what do they cost the encoder's gradient?"),
    "reparam": ("reparam", "Why the reparameterisation trick? Its gradient variance against the score function's"),
    "joint": ("joint", "The ELBO averaged over data as -KL(q(x) q(z|x) || p(x, z)) - H(q(x))"),
    "gaps": ("gaps", "How much of log p(x) - ELBO is the Gaussian family's (approximation gap), how much the encoder's (amortisation gap)?"),
    "generation": ("generation", "What does the decoder do alone, what does the encoder add, and why can a good ELBO give poor samples?"),
}
TOPICS = tuple(_TOPICS)
QUESTIONS = {t: q for t, (_, q) in _TOPICS.items()}


def run(topic: str, out_dir, *, quick: bool = False, seed: int = 0, data_dir=None) -> dict:
    """Run one experiment; write its PNGs and `<topic>.json` into out_dir (created if needed); return the JSON's content.

    The result holds "topic", "question", "finding" (two or three lines of text: the answer, with this run's
    numbers), "quick", "seed", "seconds", "files" (names inside out_dir, the JSON last), "notes" (messages for
    the user; empty when all went to plan) and "numbers" (everything plotted).
    data_dir: a directory (or a list of them) where `binarized_mnist.npz` is looked for (topic posterior).
    """
    if topic not in _TOPICS:
        raise ValueError(f"unknown topic {topic!r}; choose one of {', '.join(TOPICS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    from ..store.run_dir import claim_dir

    # The user's own files are never overwritten: out_dir is new, empty, or one explain wrote before.
    out_dir = claim_dir(out_dir, ".npvae-explain", "--out", "an npvae explain directory", ours=[f"{t}.json" for t in TOPICS])
    module = importlib.import_module(f".{_TOPICS[topic][0]}", __name__)
    from . import _common

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), TOPICS.index(topic)]))
    t0 = time.perf_counter()
    r = module.run(out_dir, quick=bool(quick), rng=rng, data_dir=data_dir)
    result = {"topic": topic, "question": QUESTIONS[topic], "finding": r["finding"], "quick": bool(quick), "seed": int(seed),
              "seconds": time.perf_counter() - t0, "files": r["files"] + [f"{topic}.json"], "notes": r.get("notes", []),
              "numbers": r["numbers"]}
    _common.write_json(out_dir / f"{topic}.json", result)
    return _common.to_jsonable(result)
