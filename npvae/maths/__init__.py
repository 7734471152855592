"""The maths everything else rests on: stable elementwise functions, the diagonal Gaussian, log-mean-exp, the bounds
and estimators' registry, and the one-element forms (and integer codes) the compiled kernels run.

May import: numpy, and npvae._validate only.
"""
