"""After training: preference pairs, the reward model and self-critical sequence training (SCST)."""
