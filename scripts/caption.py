"""Thin wrapper: see vlm/cli/caption.py."""

from vlm.cli.caption import main

if __name__ == "__main__":
    main()
