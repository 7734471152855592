"""The exact oracles: linear-Gaussian models whose log p(x), posterior and ELBO are closed forms."""
