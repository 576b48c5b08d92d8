"""Thin wrapper: see vlm/cli/evaluate.py."""

from vlm.cli.evaluate import main

if __name__ == "__main__":
    main()
