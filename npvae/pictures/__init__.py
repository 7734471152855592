"""The pictures: the drawing canvas (canvas) and every PNG a run writes (plots).

May import: npvae.maths, npvae.likelihoods, npvae.store, npvae.vae.
"""
