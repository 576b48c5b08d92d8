"""Thin wrapper: see vlm/cli/ask.py."""

from vlm.cli.ask import main

if __name__ == "__main__":
    main()
