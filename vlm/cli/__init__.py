"""Command-line entry points: argument parsing that calls functions in `vlm`."""
