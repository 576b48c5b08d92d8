"""The model and nothing else: configs, tokenizer, vision encoder, projector, decoder, masks, the model that joins
them, and the model folder on disk. Imports nothing from data, training, inference or evaluation."""
