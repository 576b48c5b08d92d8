"""Where the main job writes, so that the inference scripts find its model without arguments."""

from pathlib import Path

MAIN_RUN_DIR = Path("runs/main")
# A model folder (vlm/model/checkpoint.py): the best validation model.
DEFAULT_CHECKPOINT = MAIN_RUN_DIR / "model"
REWARD_RUN_DIR = Path("runs/reward")
# A model folder plus reward_head.safetensors (vlm/posttrain/reward.py).
DEFAULT_REWARD_MODEL = REWARD_RUN_DIR / "model"
