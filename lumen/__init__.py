"""Lumen: neural layouts from foundation-model features as ControlNet conditions."""
__version__ = "0.1.0"
