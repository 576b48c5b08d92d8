"""Measurements around the model, imported by nothing in the core: speed benchmarks, the Hugging Face peer, the
wall-clock race and the scaling ladder."""
