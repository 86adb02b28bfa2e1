"""Tiny models and data for the demo and the tests: real classes with small sizes, saved as real weights load."""
