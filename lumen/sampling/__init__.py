"""Sampling with a trained ControlNet: the pipeline, the source images, sample sets, grids and generated data sets."""
