"""Measuring generated images: the metrics and the scoring of a sample set."""
