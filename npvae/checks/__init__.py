"""Checks: finite differences with their error model and kink certificates (gradcheck); `npvae check`'s gradient and
bound rows (check) and value rows (values); the framework layouts `npvae verify` reads (verify_layouts). The public
entry points stay at the top: npvae.verify, npvae.testing, npvae.head.

May import: npvae.maths .. npvae.objectives, npvae.oracle.
"""
