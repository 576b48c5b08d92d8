"""Thin wrapper: see vlm/cli/finetune_rl.py."""

from vlm.cli.finetune_rl import main

if __name__ == "__main__":
    main()
