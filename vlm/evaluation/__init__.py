"""Scoring a model on a data set: the metrics, the evaluation run and its HTML report."""
