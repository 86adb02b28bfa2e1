"""Semantic correspondence with a backbone's features: matching points, PCK benchmarks, pictures."""
