"""Thin wrapper: see vlm/cli/train.py."""

from vlm.cli.train import main

if __name__ == "__main__":
    main()
