"""Training side: accelerate-driven entry points and their distributed helpers."""
