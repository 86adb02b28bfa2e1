"""Backbones: image batch -> dense feature map (B, C, h, w)."""
