"""``python -m tartok_tui``: the same as the ``tartok-tui`` command."""

from tartok_tui.cli import main

if __name__ == "__main__":
    main()
