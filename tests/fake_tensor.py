"""A stand-in for a torch tensor: what npvae may touch of one (.detach().cpu().numpy()), so tests can prove the duck
typing without importing torch."""

import numpy as np


class FakeTensor:
    """Quacks like a torch tensor: the check must take it through .detach().cpu().numpy() and import nothing."""

    def __init__(self, a):
        self.a = np.asarray(a)

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.a
