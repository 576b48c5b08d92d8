"""Training: the loop (checkpoints, resume, DDP), the optimizer, and building the training data from a mixture."""
