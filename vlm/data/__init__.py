"""Data sets, image loading and batching. Every data set yields `Sample`s (see `vlm/data/sample.py`)."""
