"""`npvae sweep`: the SPEC and its checks (spec), what a worker runs (tasks), the progress lines (progress), the report
(report), and the driver: plan, chunks, evaluations, retries (driver).

May import: npvae.training, npvae.evaluation and everything below them; never the cli.
"""
