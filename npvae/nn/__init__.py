"""The networks: dense layers and activations (each forward beside its backward), the MLP, SGD and Adam.

May import: npvae.maths.
"""
