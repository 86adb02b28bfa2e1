"""One module per ``lumen`` command (the table is ``lumen_train.cli.COMMANDS``): ``main(argv=None)`` parses the
config, builds objects, calls the stages and reports; ``SECTIONS`` names the config sections it reads."""
