"""Using a trained model: the one generation loop, the predictor that turns images and questions into text, and
attention maps. Imports nothing from training or post-training."""
