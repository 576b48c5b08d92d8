"""Thin wrapper: see vlm/cli/train_reward.py."""

from vlm.cli.train_reward import main

if __name__ == "__main__":
    main()
