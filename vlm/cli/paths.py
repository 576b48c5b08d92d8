"""Where the main job writes, so that the inference scripts find its model without arguments."""

from pathlib import Path

MAIN_RUN_DIR = Path("runs/main")
DEFAULT_CHECKPOINT = MAIN_RUN_DIR / "model"  # a model folder (see vlm/model/checkpoint.py): the best validation model
REWARD_RUN_DIR = Path("runs/reward")
DEFAULT_REWARD_MODEL = REWARD_RUN_DIR / "model"  # a model folder plus reward_head.safetensors (see vlm/posttrain/reward.py)
