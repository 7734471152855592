"""Training: the frozen config (config), the training state and its checkpoints (state), the loop with its
divergence and Ctrl-C handling (loop), and its terminal progress bar (progress).

May import: npvae.maths, npvae.nn, npvae.likelihoods, npvae.store, npvae.vae, npvae.backends, npvae.objectives.
"""
