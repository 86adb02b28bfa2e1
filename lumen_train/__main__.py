"""``python -m lumen_train <command> ...`` (and ``accelerate launch -m lumen_train <command> ...``): the ``lumen``
command."""

from lumen_train.cli import cli

cli()
