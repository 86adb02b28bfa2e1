"""Lumen's runnable side: the accelerate-driven stages (PCA fit, encoding, synthesis, the ControlNet trainer),
their distributed helpers, and the commands (``lumen_train.commands``) behind ``scripts/``, ``train/`` and the
``lumen-*`` console entry points. The library it builds on, ``lumen``, never imports accelerate."""
