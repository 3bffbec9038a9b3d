"""Command-line entry points. Each module has a ``cli_main(argv=None)``; the repository's scripts
(``train_net.py``, ...) are thin wrappers around them."""
