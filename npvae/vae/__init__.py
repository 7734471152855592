"""The model and its NumPy specification: the one-layer VAE (model, one_layer_objective) and the ladder of L stochastic
layers (ladder, ladder_objective, ladder_surrogate), the map from an architecture to its family (models), input checks,
memory estimates, importance sampling.

May import: npvae.maths, npvae.nn, npvae.likelihoods, npvae.store. Never a backend: npvae.objectives, above both,
runs the backend asked for.
"""
