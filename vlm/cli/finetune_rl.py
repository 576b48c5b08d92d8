"""vlm-finetune-rl: self-critical sequence training (SCST) of a trained captioner, with CIDEr-D on the test split
before and after.

vlm-finetune-rl                                              # runs/main/model -> runs/scst/model, CIDEr-D reward
vlm-finetune-rl --reward reward-model --reward-model runs/reward/model
vlm-finetune-rl --max-steps 300 --samples-per-image 5 --lr 1e-5

Writes, in --out-dir: model/ (the fine-tuned model), metrics.jsonl (loss and rewards per step), metrics.json (CIDEr-D
and, on the shapes set, objects named correctly, before and after) and eval-before/, eval-after/ (reports).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from tqdm import tqdm

from vlm.cli.common import (
    UsageError,
    add_data_path_arguments,
    check_at_least_one,
    data_paths,
    load_matching_reward_model,
    run_command,
)
from vlm.cli.paths import DEFAULT_CHECKPOINT, DEFAULT_REWARD_MODEL
from vlm.data.catalog import build_dataset, parse_data_spec
from vlm.data.images import load_image
from vlm.data.transforms import Preprocessing, build_transform
from vlm.evaluation.evaluate import evaluate, load_samples
from vlm.evaluation.metrics.cider import document_frequencies
from vlm.inference.generate import GenerationConfig
from vlm.inference.predict import Predictor
from vlm.model.checkpoint import load_model, save_model
from vlm.posttrain.scst import CiderReward, RewardModelReward, SCSTConfig, finetune
from vlm.runtime import autocast_dtype, resolve_device
from vlm.training.loop import finetune_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-finetune-rl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="the captioner to start from")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/scst"))
    parser.add_argument("--data", default="shapes", help="a caption set: shapes, coco or karpathy (default shapes)")
    parser.add_argument("--train-samples", type=int, default=None, help="training images (default: all)")
    parser.add_argument("--eval-split", default="test", choices=["val", "test"])
    parser.add_argument("--eval-samples", type=int, default=None, help="images scored before and after (default: all)")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16, help="images per step")
    parser.add_argument("--samples-per-image", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=1.0, help="of the sampled captions")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-5, help="peak learning rate of every part")
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--reward", default="cider", choices=["cider", "reward-model"])
    parser.add_argument("--reward-model", type=Path, default=DEFAULT_REWARD_MODEL, help="for --reward reward-model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_data_path_arguments(parser)
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def body() -> None:
        check_at_least_one(
            args, "max_steps", "batch_size", "samples_per_image", "max_new_tokens", "train_samples", "eval_samples"
        )
        if args.temperature <= 0:
            raise UsageError(f"--temperature must be above 0, got {args.temperature}")
        try:
            [(data_name, _)] = parse_data_spec(args.data)
        except ValueError as error:
            raise UsageError(str(error)) from None
        device = resolve_device(args.device)
        model, tokenizer = load_model(args.checkpoint, device)
        splits = {}
        for split, count in (("train", args.train_samples), (args.eval_split, args.eval_samples)):
            try:
                splits[split] = load_samples(build_dataset(data_name, split, data_paths(args), mode="eval"), count)
            except ValueError as error:
                raise UsageError(f"--data {data_name}: {error}") from None
            if any(s.question is not None for s in splits[split][:1]):
                raise UsageError(f"--data {data_name} is a question set; SCST here fine-tunes captions")
        if args.reward == "cider":
            corpus = {i: list(s.references) or [s.target] for i, s in enumerate(splits["train"])}
            reward = CiderReward(tokenizer, document_frequencies(corpus))
        else:
            reward_model = load_matching_reward_model(args.reward_model, args.checkpoint, model, tokenizer)
            reward = RewardModelReward(reward_model, tokenizer)
        dtype = autocast_dtype(device, args.dtype)
        generation = GenerationConfig(max_new_tokens=args.max_new_tokens)

        def score(name: str) -> dict:
            predictor = Predictor(model, tokenizer, device, dtype)
            metrics = evaluate(
                predictor, splits[args.eval_split], args.out_dir / name, generation, toolkit=False, quiet=True
            )
            return {k: v for k, v in metrics.items() if k in ("CIDEr", "objects_named_correctly", "images")}

        before = score("eval-before")
        print(f"before: CIDEr-D {before['CIDEr']:.4f} on {before['images']} {args.eval_split} images", flush=True)

        train_samples = splits["train"]
        vision = model.config.vision
        transform = build_transform(vision.image_size, train=True, preprocessing=Preprocessing(resize=vision.resize))

        def image_batches(step: int) -> tuple[torch.Tensor, list[list[str]]]:
            chosen = random.Random(args.seed * 1_000_003 + step).sample(
                train_samples, min(args.batch_size, len(train_samples))
            )
            images = torch.stack([transform(load_image(s.image)) for s in chosen])
            return images, [list(s.references) or [s.target] for s in chosen]

        log_path = args.out_dir / "metrics.jsonl"
        log_path.write_text("")
        progress = tqdm(total=args.max_steps, desc="scst", dynamic_ncols=True)

        def log(step: int, loss: float, stats: dict[str, float]) -> None:
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step, "loss": loss, **stats}) + "\n")
            progress.update(1)
            progress.set_postfix(reward=f"{stats['sample_reward']:.3f}", greedy=f"{stats['greedy_reward']:.3f}")

        config = SCSTConfig(args.samples_per_image, args.max_new_tokens, args.temperature)
        train_config = finetune_config(
            args.lr,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            warmup_steps=args.warmup_steps,
            seed=args.seed,
            dtype=args.dtype,
        )
        finetune(model, tokenizer, image_batches, reward, config, train_config, device, log)
        progress.close()
        save_model(args.out_dir / "model", model, tokenizer)
        after = score("eval-after")
        summary = {"before": before, "after": after, "reward": args.reward, "checkpoint": str(args.checkpoint)}
        summary["steps"] = args.max_steps
        (args.out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"after:  CIDEr-D {after['CIDEr']:.4f} ({after['CIDEr'] - before['CIDEr']:+.4f})")
        if "objects_named_correctly" in after:
            print(
                f"objects named correctly: {before['objects_named_correctly']:.3f} -> "
                f"{after['objects_named_correctly']:.3f}"
            )
        print(f"fine-tuned model in {args.out_dir / 'model'}")

    run_command("vlm-finetune-rl", body)


if __name__ == "__main__":
    main()
