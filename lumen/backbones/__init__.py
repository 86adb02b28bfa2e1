"""Layout backbones: the foundation models whose dense features make a neural layout."""
