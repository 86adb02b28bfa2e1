"""One module per command: ``main(argv=None)`` parses the config, builds objects, calls a stage and reports;
``cli()`` runs it as a program (exit codes in ``lumen.errors``). ``scripts/*.py``, ``train/*.py`` and the
``lumen-*`` console entry points all call these."""
