"""Thin wrapper: see vlm/cli/scaling.py."""

from vlm.cli.scaling import main

if __name__ == "__main__":
    main()
