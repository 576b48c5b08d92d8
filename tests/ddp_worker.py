"""Run by test_train.py under torchrun: trains the tiny preset on 2 gloo processes, saves each rank's weights and
the training draws it loaded."""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from test_train import DDP_BATCH, DDP_SETTINGS, caption_data, quick_config  # noqa: E402

import vlm.training.loop as train_module  # noqa: E402
from vlm.data.mixture import TokenizedDataset  # noqa: E402
from vlm.model.config import get_preset  # noqa: E402

out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
torch.set_num_threads(1)
captured = {}
build = train_module.build_optimizer


def capture_model(model, config, fused=False):
    captured["model"] = model
    if rank == 0:
        save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, str(out / "initial.safetensors"))
    return build(model, config, fused)


draws = []
load = TokenizedDataset.__getitems__  # the DataLoader fetches a batch's keys at once


def record_draws(self, keys):
    draws.extend(list(key) for key in keys if isinstance(key, tuple))  # validation keys are plain indices
    return load(self, keys)


train_module.build_optimizer = capture_model
TokenizedDataset.__getitems__ = record_draws
config = quick_config(out, batch_size=DDP_BATCH, **DDP_SETTINGS)
train_module.train(get_preset("tiny"), config, caption_data(), device="cpu")
weights = {k: v.contiguous() for k, v in captured["model"].state_dict().items()}
save_file(weights, str(out / f"rank{rank}.safetensors"))
(out / f"rank{rank}_draws.json").write_text(json.dumps(draws))
