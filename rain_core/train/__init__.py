"""Training helpers: synthetic data generated on the fly."""
