"""Data sources: where images and captions come from, and how each is read and written."""
