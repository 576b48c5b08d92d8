"""Metrics: caption metrics of the COCO benchmark (CIDEr-D built in; the toolkit for the rest), VQA accuracy, and
the built-in shapes set's object accuracy."""
