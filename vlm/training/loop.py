"""The training loop: Muon and AdamW with warm-up + cosine decay, gradient accumulation and clipping, bf16 autocast,
periodic validation, atomic checkpoints with exact resume, and DistributedDataParallel under torchrun.

The step itself is `model(**batch)`; everything else here is bookkeeping, kept in small functions. Data comes in
as `TrainingData` (see `vlm/data/catalog.py`), so this file knows nothing of particular data sets.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vlm.data.batch import collate
from vlm.data.mixture import MixtureDataset, MixtureSampler, TokenizedDataset, resolve_num_workers, training_loader
from vlm.data.overlap import RECORD_NAME, write_training_images
from vlm.data.packing import group_by_image, parse_sources
from vlm.data.shards import ShardStream
from vlm.data.unreadable import count_images, failed_reads
from vlm.model.checkpoint import check_weights_fit, save_model, write_atomic
from vlm.model.config import VLMConfig
from vlm.model.tokenizer import Tokenizer
from vlm.model.vision_language_model import PARTS, VisionLanguageModel
from vlm.runtime import autocast, autocast_dtype, resolve_device
from vlm.training.budget import TimeBudget
from vlm.training.image_failures import ImageFailures
from vlm.training.optim import MuonAdamW, muon_matrices


@dataclass
class TrainConfig:
    out_dir: str = "runs/main"
    # The run's length in steps; with a time budget (below), the most it may plan.
    max_steps: int = 3000
    # Minutes of training, data loading and validation included: the run plans as many steps as fit from the pace
    # it measures, at step 50 and again at every validation (vlm/training/budget.py), so one recipe fills the same
    # minutes on a slow and a fast machine; the main job's 14 leave room for start-up within a quarter of an
    # hour. 0: exactly max_steps.
    time_budget_min: float = 14.0
    batch_size: int = 64  # per process, per micro-batch
    grad_accum: int = 1
    # 5e-4 rather than 1e-3: it names far more objects right in the same steps; 2e-3 and above
    # stall or diverge (docs/results.md).
    lr_decoder: float = 5e-4
    lr_projector: float = 5e-4
    lr_encoder: float = 5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    # "muon": Muon for the linear layers' weight matrices, AdamW for the rest (vlm/training/optim.py); it names far
    # more objects right than AdamW in the same steps (docs/results.md). "adamw": AdamW alone.
    optimizer: str = "muon"
    muon_lr_ratio: float = 4.0  # Muon's learning rate as a multiple of its part's
    # Muon for convolution filters too (the encoder's stem) rather than AdamW; see the default preset's comment.
    muon_convolutions: bool = True
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # cosine decays to this fraction of each peak learning rate
    grad_clip: float = 1.0
    # Parts whose weights stay as they start, comma-separated from encoder, projector, decoder (e.g. a pretrained
    # encoder, or a trained model's decoder); --freeze-encoder is the common case. A frozen encoder's features are
    # computed without a graph for backward.
    freeze: str = field(
        default="", metadata={"help": "model parts to keep as they start, comma-separated: encoder, projector, decoder"}
    )
    freeze_encoder: bool = field(
        default=False, metadata={"help": "keep the vision encoder as it starts (a pretrained one, say)"}
    )
    dtype: str = "auto"  # "auto" (bfloat16 where the hardware runs it fast), "bfloat16", "float32"
    compile: bool = False
    augment: bool = True  # a random shift of every image; with `varied_renderings`, varied built-in scenes too
    # Built-in scenes drawn with `varied_rendering` rather than the one training rendering: the captions then hold on
    # scenes drawn otherwise (docs/results.md, "Robustness").
    varied_renderings: float = field(
        default=0.5,
        metadata={
            "help": "share of built-in training scenes drawn with varied sizes, colours, backgrounds, anti-aliasing "
            "and JPEG (0: off; only with --augment)"
        },
    )
    blind: bool = False  # replace every image by zeros: the baseline that shows what the image contributes
    seed: int = 0
    # Data loader worker processes per training process. -1 (auto): from the cores this process may use, shared with
    # the other training processes of the machine, one left for the step (vlm/data/mixture.py: default_num_workers);
    # 0: load in the training process itself.
    num_workers: int = -1
    # Caption sets (COCO, Karpathy): an image's captions drawn one after another, so that a batch holds them
    # together and decodes the image once rather than once per caption (vlm/data/mixture.py: mixture_order).
    # False: every caption drawn on its own, as the built-in sets always are.
    group_captions: bool = True
    log_every: int = 10
    eval_every: int = 250
    val_batches: int = 8
    epoch_size: int | None = None  # draws per epoch; default: the sum of the training sets' sizes
    weights: list[float] = field(default_factory=list)  # mixture weights, one per training set; default: by size
    data: list[str] = field(default_factory=list)  # the training sets' names, as weights orders them (for the record)
    # "token": the mean over every target token of the batch; "sample": each sample's mean, then their mean (a
    # one-word answer then weighs as much as a caption).
    loss_mean: str = "token"
    # 0: one text (caption or question) per sequence. N > 0: every text about an image in one sequence of up to N
    # text tokens, each seeing only the image and itself (vlm/data/packing.py); mixture weights then count images.
    packed_text_len: int = 0
    # With packing: the sources to pack, comma-separated (e.g. "easy_vqa"); empty packs every source.
    packed_sources: str = ""
    # With packing: each packed row holds at most this many of its image's texts, each data set's share of them as
    # its weight says, so that a row carries one encoded image for several texts while the mixture stays as unpacked
    # (vlm/data/packing.py: ImageGroups). 0: every text of the image, in a random order, while they fit.
    packed_texts: int = 0
    # A training image that cannot be read is named once, counted and replaced by the next readable sample; the run
    # stops when more than this share of the training set's images fail (0: at the first).
    max_unreadable_share: float = 0.01

    def __post_init__(self) -> None:
        if self.optimizer not in ("muon", "adamw"):
            raise ValueError(f"optimizer must be 'muon' or 'adamw', got {self.optimizer!r}")
        if self.loss_mean not in ("token", "sample"):
            raise ValueError(f"loss_mean must be 'token' or 'sample', got {self.loss_mean!r}")
        if self.packed_text_len < 0:
            raise ValueError(f"packed_text_len must be 0 (off) or a number of tokens, got {self.packed_text_len}")
        if self.time_budget_min < 0:
            raise ValueError(f"time_budget_min must be 0 (off) or a number of minutes, got {self.time_budget_min}")
        if (self.packed_sources or self.packed_texts) and not self.packed_text_len:
            raise ValueError("packed_sources and packed_texts need packing on: set packed_text_len too")
        if self.packed_texts < 0:
            raise ValueError(f"packed_texts must be 0 (every text) or a number of texts, got {self.packed_texts}")
        if not 0 <= self.max_unreadable_share <= 1:
            raise ValueError(f"max_unreadable_share must be between 0 and 1, got {self.max_unreadable_share}")
        unknown = [part for part in self.frozen_parts if part not in PARTS]
        if unknown:
            raise ValueError(f"freeze: no model part {unknown[0]!r}; the parts are {', '.join(PARTS)}")
        if set(self.frozen_parts) == set(PARTS):
            raise ValueError(f"freeze: every part frozen ({self.freeze}) leaves nothing to train")

    @property
    def frozen_parts(self) -> tuple[str, ...]:
        parts = [p.strip() for p in self.freeze.split(",") if p.strip()]
        return tuple(dict.fromkeys(parts + ["encoder"] * self.freeze_encoder))


def finetune_config(lr: float, **settings) -> TrainConfig:
    """A run that starts from a trained model (reward model, SCST) or a short ladder rung: one learning rate for
    every part, and AdamW, which at these small learning rates needs no orthogonalization and is what their
    figures were measured with (docs/extensions.md). `settings`: any other TrainConfig field."""
    settings = {"time_budget_min": 0.0, **settings}  # exactly the steps asked for
    return TrainConfig(lr_decoder=lr, lr_projector=lr, lr_encoder=lr, optimizer="adamw", **settings)


@dataclass
class TrainingData:
    """What the loop trains on: Samples, not tensors; the loop tokenizes and transforms them."""

    train_parts: list[Dataset]  # each a Dataset of Sample
    val: Dataset  # Samples for validation loss
    tokenizer: Tokenizer
    train_transform: Callable
    eval_transform: Callable
    # A new run's starting weights (`--init-from`: vlm/training/init_from.py); None: random. A resumed run's come
    # from its checkpoint.
    initial_weights: dict[str, torch.Tensor] | None = None


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    position: int = 0  # draws of this epoch already consumed, per process
    best_val_loss: float = math.inf
    elapsed_s: float = 0.0
    planned_steps: int = 0  # with a time budget, the step count it planned (0: not yet)
    unreadable_images: list[str] = field(default_factory=list)  # one message (file: reason) per unreadable file
    unreadable_reads: int = 0  # draws whose image failed to load, each replaced by the next readable sample
    stream_workers: int = -1  # a shard stream's loader workers, which its order depends on (-1: not streaming)


class TrainingDiverged(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Pieces of the loop


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to `min_lr_ratio` at `max_steps`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def freeze_parts(model: VisionLanguageModel, parts: tuple[str, ...]) -> None:
    """The named parts (of PARTS) take no gradient and no optimizer step; call before building the optimizer."""
    for name in parts:
        model.part(name).requires_grad_(False)


def build_optimizer(model: VisionLanguageModel, config: TrainConfig, fused: bool = True) -> torch.optim.Optimizer:
    """The encoder, the projector and the decoder, each at its own learning rate (see `optimizer_for_parts`)."""
    parts = [(model.vision_encoder, config.lr_encoder), (model.projector, config.lr_projector)]
    return optimizer_for_parts([*parts, (model.decoder, config.lr_decoder)], config, fused)


def optimizer_for_parts(
    parts: list[tuple[torch.nn.Module, float]], config: TrainConfig, fused: bool = True
) -> torch.optim.Optimizer:
    """Groups per part and kind. With `config.optimizer == "muon"` a part's linear-layer matrices take Muon steps at
    `muon_lr_ratio` times its learning rate; everything else takes AdamW steps, matrices, embeddings and convolutions
    with weight decay, biases and norms without.
    fused: AdamW in one kernel for every parameter (CPU and GPU), far cheaper on a CPU than the default
    per-parameter loop."""
    groups = []
    for module, lr in parts:
        params = [p for p in module.parameters() if p.requires_grad]
        matrices = muon_matrices(module, config.muon_convolutions) if config.optimizer == "muon" else set()
        kinds = [
            ([p for p in params if p in matrices], True, lr * config.muon_lr_ratio, config.weight_decay),
            ([p for p in params if p not in matrices and p.dim() >= 2], False, lr, config.weight_decay),
            ([p for p in params if p.dim() < 2], False, lr, 0.0),
        ]
        for chosen, muon, group_lr, decay in kinds:
            if chosen:
                groups.append(
                    {"params": chosen, "muon": muon, "lr": group_lr, "peak_lr": group_lr, "weight_decay": decay}
                )
    device = groups[0]["params"][0].device
    return MuonAdamW(groups, betas=config.betas, fused=fused, newton_schulz_dtype=autocast_dtype(device, config.dtype))


def apply_gradients(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
    """The end of every training step here (main loop, reward model, SCST, benchmark): clip the gradients' global
    norm to `grad_clip` (0: no clipping), take the optimizer step, clear the gradients."""
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def set_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor
    return optimizer.param_groups[0]["lr"]


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_choice: str) -> tuple[Distributed, torch.device]:
    """Under torchrun (RANK/WORLD_SIZE set) join the process group: NCCL on GPUs, gloo on CPUs."""
    if "RANK" not in os.environ:
        return Distributed(), resolve_device(device_choice)
    info = Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    use_cuda = torch.cuda.is_available() and device_choice in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info, torch.device(f"cuda:{info.local_rank}" if use_cuda else "cpu")


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: <run>/checkpoints/last holds the model folder plus the optimizer, RNG and data position. It is
# written beside and swapped in by rename, so an interrupted save leaves the previous checkpoint whole.

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer.safetensors"
# What a run writes in its folder besides evaluations: cleared when a run that never reached its first checkpoint
# is started again, so that nothing of the dead run (log lines, a best model, a half-written save) is taken for
# the new one's.
RUN_OUTPUTS = ("metrics.jsonl", "curves.png", "config.json", RECORD_NAME, "model", "checkpoints")


def last_checkpoint(run_dir: Path) -> Path | None:
    """The run's checkpoint to resume from: checkpoints/last, or the previous one that a save interrupted mid-swap
    left as last.old; None if the run has not reached its first checkpoint."""
    directory = run_dir / "checkpoints" / "last"
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / TRAINER_STATE).is_file():
            return candidate
    return None


def clear_unfinished_run(run_dir: Path) -> None:
    """Remove what a run that stopped before its first checkpoint left in `run_dir` (see RUN_OUTPUTS)."""
    assert last_checkpoint(run_dir) is None, f"{run_dir} holds a checkpoint"
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def save_training_checkpoint(
    directory: Path,
    model: VisionLanguageModel,
    tokenizer: Tokenizer,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    train_config: TrainConfig,
) -> None:
    staging = directory.with_name(directory.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    save_model(staging, model, tokenizer)
    tensors, optimizer_meta = flatten_optimizer_state(optimizer.state_dict())
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(staging / OPTIMIZER_STATE))
    meta = {"state": asdict(state), "optimizer": optimizer_meta, "train_config": asdict(train_config)}
    write_atomic(staging / TRAINER_STATE, (json.dumps(meta, indent=2) + "\n").encode())
    previous = directory.with_name(directory.name + ".old")
    shutil.rmtree(previous, ignore_errors=True)
    if directory.exists():
        directory.rename(previous)
    staging.rename(directory)
    shutil.rmtree(previous, ignore_errors=True)


def load_training_checkpoint(
    directory: Path, model: VisionLanguageModel, optimizer: torch.optim.Optimizer
) -> TrainState:
    if not (directory / TRAINER_STATE).is_file():
        found = last_checkpoint(directory.parent.parent)  # a save interrupted mid-swap leaves last.old
        if found is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {directory}")
        directory = found
    from vlm.model.checkpoint import load_model  # the model folder inside the checkpoint is an ordinary one

    loaded, _ = load_model(directory)
    model.load_state_dict(loaded.state_dict())
    meta = json.loads((directory / TRAINER_STATE).read_text())
    tensors = load_file(str(directory / OPTIMIZER_STATE))
    torch.set_rng_state(tensors.pop("rng.torch"))
    optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizer"]))
    return TrainState(**meta["state"])


def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state -> (tensors for safetensors, JSON-able rest), so no pickle is needed."""
    tensors = {}
    for param_id, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            tensors[f"state.{param_id}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, {"param_groups": state_dict["param_groups"]}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------------------------
# Logging


class RunLog:
    """metrics.jsonl (one JSON object per line) and curves.png in the run folder; written by rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.path = run_dir / "metrics.jsonl"
        self.plot_path = run_dir / "curves.png"
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume, drop records the interrupted run wrote after its last checkpoint."""
        if self.enabled and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def plot(self) -> None:
        if not (self.enabled and self.path.exists()):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = [json.loads(line) for line in self.path.read_text().splitlines()]
        train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
        val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
        figure, axis = plt.subplots(figsize=(7, 4))
        for points, label in ((train, "train"), (val, "validation")):
            if points:
                axis.plot(*zip(*points), label=label, marker="o" if label == "validation" else None)
        axis.set(xlabel="step", ylabel="loss (target tokens)", yscale="log", title="vlm training")
        axis.legend()
        figure.tight_layout()
        figure.savefig(self.plot_path, dpi=100)
        plt.close(figure)


# ---------------------------------------------------------------------------------------------------------------
# The loop


@torch.no_grad()
def validation_loss(
    model: VisionLanguageModel, loader: DataLoader, device: torch.device, amp: Any, batches: int
) -> float:
    model.eval()
    total, count = 0.0, 0
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with amp:
            loss = model(**batch)
        targets = int((batch["target_mask"] & batch["attention_mask"]).sum())
        total += float(loss) * targets
        count += targets
    model.train()
    return total / max(count, 1)


def shard_loader(
    stream: ShardStream,
    tokenizer: Tokenizer,
    transform: Callable,
    config: TrainConfig,
    max_text_len: int,
    dist_info: Distributed,
    pin_memory: bool,
    state: TrainState,
) -> DataLoader:
    """Batches streamed from shards, this process's share (see ShardStream). Its workers do not persist: each
    epoch starts them afresh with the epoch's shard assignment."""
    encoder = TokenizedDataset(stream, tokenizer, transform, max_text_len, config.blind, uint8_images=True)
    rank, world_size, workers = dist_info.rank, dist_info.world_size, state.stream_workers
    stream.configure(config.batch_size, config.seed, rank, world_size, workers, encoder.encode)
    return DataLoader(
        stream,
        batch_size=config.batch_size,
        collate_fn=partial(collate, pad_id=tokenizer.pad_id),
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=True,
    )


def train(
    model_config: VLMConfig,
    config: TrainConfig,
    data: TrainingData,
    resume: bool = False,
    device: str = "auto",
    on_validate: Callable[[VisionLanguageModel, int], dict[str, float]] | None = None,
) -> TrainState:
    """Train, writing the run folder `config.out_dir`: config.json, metrics.jsonl, curves.png, model/ (the best
    validation model) and checkpoints/last (for --resume). Returns the final state."""
    dist_info, torch_device = init_distributed(device)
    torch.manual_seed(config.seed)
    run_dir = Path(config.out_dir)
    checkpoint_dir = run_dir / "checkpoints" / "last"
    model_config.decoder.vocab_size = data.tokenizer.vocab_size

    # A resumed run's weights, the encoder's included, come from its checkpoint: nothing to download or read again.
    model = VisionLanguageModel(model_config, load_encoder_weights=not resume and data.initial_weights is None)
    if data.initial_weights is not None and not resume:
        check_weights_fit(model.state_dict(), data.initial_weights, Path("the --init-from model"))
        model.load_state_dict(data.initial_weights)
    model = model.to(torch_device)
    freeze_parts(model, config.frozen_parts)
    optimizer = build_optimizer(model, config)
    state = TrainState()
    if resume:
        state = load_training_checkpoint(checkpoint_dir, model, optimizer)
        if state.planned_steps:
            config = replace(config, max_steps=state.planned_steps)
    elif dist_info.is_main and checkpoint_dir.exists():
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out-dir"
        )
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = {"model": model_config.to_dict(), "train": asdict(config), "world_size": dist_info.world_size}
        (run_dir / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
        write_training_images(run_dir, data.train_parts)  # evaluation refuses test images among them
    log = RunLog(run_dir, dist_info.is_main)
    log.truncate_after(state.step)

    train_model: torch.nn.Module = model
    if dist_info.enabled:
        train_model = DistributedDataParallel(
            model, device_ids=[torch_device.index] if torch_device.type == "cuda" else None
        )
    if config.compile:
        train_model = torch.compile(train_model)
    amp_dtype = autocast_dtype(torch_device, config.dtype)
    amp = autocast(torch_device, amp_dtype)

    max_text_len = model_config.max_text_len
    parts, weights = data.train_parts, config.weights or None
    streamed = any(isinstance(part, ShardStream) for part in parts)
    if streamed and (len(parts) != 1 or config.packed_text_len):  # before packing, which would index the stream
        raise ValueError("a shard stream trains on its own and unpacked (no other data set, no packed_text_len)")
    if config.packed_text_len:
        parts, weights = group_by_image(parts, weights, parse_sources(config.packed_sources), config.packed_texts)
    train_transform = data.train_transform if config.augment else data.eval_transform
    pin_memory = torch_device.type == "cuda"  # page-locked batches: the non_blocking copies below then overlap
    order: MixtureSampler | ShardStream
    if streamed:
        order = parts[0]
        # The stream's order depends on its worker count: a resumed run keeps the one it started with.
        if state.stream_workers < 0:
            workers = torch.tensor(resolve_num_workers(config.num_workers), device=torch_device)
            if dist_info.enabled:  # every process must split its shards alike (machines may differ in cores)
                dist.all_reduce(workers, op=dist.ReduceOp.MIN)
            state.stream_workers = int(workers)
        loader = shard_loader(
            order, data.tokenizer, train_transform, config, max_text_len, dist_info, pin_memory, state
        )
    else:
        train_set = TokenizedDataset(
            MixtureDataset(parts),
            data.tokenizer,
            train_transform,
            max_text_len,
            config.blind,
            config.packed_text_len or None,
            uint8_images=True,  # normalised below, on the training device
        )
        order = MixtureSampler(
            [len(p) for p in parts],
            weights,
            config.epoch_size,
            config.seed,
            dist_info.rank,
            dist_info.world_size,
            [getattr(part, "image_groups", lambda: None)() for part in parts] if config.group_captions else None,
        )
        loader = training_loader(
            train_set, order, config.batch_size, config.num_workers, pin_memory, replace_unreadable=True
        )
    image_failures = ImageFailures(
        count_images(data.train_parts),
        config.max_unreadable_share,
        torch_device,
        dist_info.enabled,
        dist_info.is_main,
        state.unreadable_images,
        state.unreadable_reads,
    )
    val_set = TokenizedDataset(data.val, data.tokenizer, data.eval_transform, max_text_len, config.blind)
    val_loader = DataLoader(
        val_set,
        batch_size=config.batch_size,
        collate_fn=lambda b: collate(b, data.tokenizer.pad_id),
        pin_memory=pin_memory,
    )

    progress = tqdm(
        total=config.max_steps, initial=state.step, disable=not dist_info.is_main, desc="train", dynamic_ncols=True
    )
    window_start, window_images = time.perf_counter(), 0
    steps_s, step_end = 0.0, time.perf_counter()  # time in training steps, validation left out
    # A resumed run keeps the plan its checkpoint holds: its own pace would be measured from the middle of a run.
    budget = None
    if config.time_budget_min and not state.planned_steps:
        budget = TimeBudget(config.time_budget_min, config.max_steps, config.eval_every)
    micro_step = 0
    model.train()
    while state.step < config.max_steps:
        order.set_epoch(state.epoch)
        if state.position >= len(order) - len(order) % config.batch_size:  # the draws of whole batches
            state.epoch, state.position = state.epoch + 1, 0
        order.set_epoch(state.epoch, state.position)
        # Starting a DataLoader's iteration draws a seed from the global RNG, which dropout also draws from. Every
        # draw carries its own seed (MixtureSampler, ShardStream), so that one is not needed; left to draw, it would shift a
        # resumed run's dropout, whose iteration starts mid-epoch where the uninterrupted run's did not.
        with torch.random.fork_rng(devices=[]):
            batches = iter(loader)
        for batch in batches:
            image_failures.add(failed_reads(batch))
            batch = {k: v.to(torch_device, non_blocking=True) for k, v in batch.items()}
            if batch["images"].dtype == torch.uint8:
                batch["images"] = train_transform.normalise(batch["images"])
            last_micro = (micro_step + 1) % config.grad_accum == 0
            sync = train_model.no_sync() if dist_info.enabled and not last_micro else nullcontext()
            with sync, amp:
                loss = train_model(**batch, per_sample=config.loss_mean == "sample")
            with sync:
                (loss / config.grad_accum).backward()
            micro_step += 1
            state.position += config.batch_size
            window_images += config.batch_size * dist_info.world_size
            if not last_micro:
                continue
            image_failures.sync()
            state.unreadable_reads = image_failures.reads  # (state.unreadable_images grows in place)
            step_loss = loss.detach().float()
            if dist_info.enabled:
                dist.all_reduce(step_loss)
                step_loss /= dist_info.world_size
            if not torch.isfinite(step_loss):
                raise TrainingDiverged(
                    f"loss became {float(step_loss)} at step {state.step + 1}: training stopped; the last good "
                    f"checkpoint in {checkpoint_dir} is intact (resume from it with a lower learning rate)"
                )
            lr = set_learning_rate(optimizer, lr_factor(state.step, config))
            apply_gradients(model, optimizer, config.grad_clip)
            state.step += 1
            progress.update(1)
            steps_s, step_end = steps_s + time.perf_counter() - step_end, time.perf_counter()
            if budget is not None and budget.step_done(state.step, steps_s) and state.step < config.max_steps:
                planned, pace = budget.plan(state.step, steps_s)
                plan = torch.tensor(planned, device=torch_device)
                if dist_info.enabled:  # every rank plans the same count: the smallest (on the device: NCCL's)
                    dist.all_reduce(plan, op=dist.ReduceOp.MIN)
                state.planned_steps = int(plan)
                config = replace(config, max_steps=state.planned_steps)
                progress.total = state.planned_steps
                progress.refresh()
                log.write({"step": state.step, "planned_steps": state.planned_steps, "seconds_per_step": pace})
            if state.step % config.log_every == 0 or state.step == config.max_steps:
                elapsed = time.perf_counter() - window_start
                images_per_s = window_images / elapsed
                state.elapsed_s += elapsed
                window_start, window_images = time.perf_counter(), 0
                progress.set_postfix(loss=f"{float(step_loss):.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.0f}")
                log.write(
                    {
                        "step": state.step,
                        "train_loss": float(step_loss),
                        "lr": lr,
                        "images_per_s": images_per_s,
                        "elapsed_s": state.elapsed_s,
                        **image_failures.record(),
                    }
                )
            if state.step % config.eval_every == 0 or state.step == config.max_steps:
                validate_and_checkpoint(
                    model,
                    data.tokenizer,
                    optimizer,
                    state,
                    config,
                    val_loader,
                    torch_device,
                    amp,
                    log,
                    dist_info,
                    on_validate,
                    checkpoint_dir,
                )
                validated = time.perf_counter()
                if budget is not None:
                    budget.validated(validated - step_end)
                window_start = step_end = validated  # validation time is not training throughput
            if state.step >= config.max_steps:
                break
        else:
            state.epoch, state.position = state.epoch + 1, 0
    progress.close()
    log.plot()
    if dist_info.enabled:
        # Every rank reaches this barrier before the group is torn down: without it gloo can abort at exit.
        dist.barrier()
        dist.destroy_process_group()
    return state


def validate_and_checkpoint(
    model: VisionLanguageModel,
    tokenizer: Tokenizer,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config: TrainConfig,
    val_loader: DataLoader,
    device: torch.device,
    amp: Any,
    log: RunLog,
    dist_info: Distributed,
    on_validate: Callable | None,
    checkpoint_dir: Path,
) -> None:
    if dist_info.is_main:
        val_loss = validation_loss(model, val_loader, device, amp, config.val_batches)
        record: dict[str, Any] = {"step": state.step, "val_loss": val_loss}
        if on_validate is not None:
            record.update(on_validate(model, state.step))
        if val_loss < state.best_val_loss:
            state.best_val_loss = val_loss
            save_model(Path(config.out_dir) / "model", model, tokenizer)
        log.write(record)
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        save_training_checkpoint(checkpoint_dir, model, tokenizer, optimizer, state, config)
        log.plot()
    if dist_info.enabled:
        dist.barrier()
