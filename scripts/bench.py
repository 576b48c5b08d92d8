"""Thin wrapper: see vlm/cli/bench.py (the benchmark against a Hugging Face peer; needs the `bench` extra)."""

from vlm.cli.bench import main

if __name__ == "__main__":
    main()
