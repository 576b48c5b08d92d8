"""vlm: a miniature vision-language model.

Data path: image -> patches (vision_encoder) -> image tokens (projector) -> [image; text] -> decoder -> logits.
"""

from vlm.checkpoint import load_model, save_model
from vlm.config import PRESETS, DecoderConfig, ProjectorConfig, VisionConfig, VLMConfig, get_preset
from vlm.model import VisionLanguageModel
from vlm.tokenizer import Tokenizer

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
