"""Evaluation: test NLL by importance sampling, the ELBO's terms, active units, I(x; z) (evaluate); the same numbers in
chunks with a Generator each, on any number of workers (chunks); the Dask connection, the only module that imports Dask
(cluster).

May import: everything below it (npvae.maths .. npvae.objectives); never training, checks, pictures, sweeps or the cli.
"""
