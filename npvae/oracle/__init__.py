"""The exact oracles: linear-Gaussian models whose log p(x), posterior and ELBO are closed forms (linear_chain, any
number of layers), and the VAEs that equal them (linear_vae).

May import: npvae.maths, npvae.nn, npvae.likelihoods, npvae.vae.
"""
