"""Training a ControlNet on layouts, on one device: the ControlNet and the training forward (the loop, the
processes and the checkpoints are lumen_train's)."""
