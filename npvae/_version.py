"""The version, in one place: the package, the checkpoints it writes and `npvae --version` read it."""

__version__ = "0.2.0"
