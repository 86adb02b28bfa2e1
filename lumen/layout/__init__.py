"""Neural layouts: the PCA, the encoder that projects features on it, their settings, pictures and the on-disk cache."""
