"""vlm: a miniature vision-language model.

Data path: image -> patches (vision_encoder) -> image tokens (projector) -> [image; text] -> decoder -> logits.
"""

from vlm.model.checkpoint import load_model, save_model
from vlm.model.config import PRESETS, DecoderConfig, ProjectorConfig, VisionConfig, VLMConfig, get_preset
from vlm.model.tokenizer import Tokenizer
from vlm.model.vision_language_model import VisionLanguageModel

__all__ = [
    "PRESETS",
    "DecoderConfig",
    "ProjectorConfig",
    "Tokenizer",
    "VLMConfig",
    "VisionConfig",
    "VisionLanguageModel",
    "get_preset",
    "load_model",
    "save_model",
]
