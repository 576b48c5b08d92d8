"""vlm-train-reward: train a reward model that scores (image, text) pairs, from a trained captioning model.

vlm-train-reward                                        # from runs/main/model, into runs/reward/model
vlm-train-reward --checkpoint runs/main/model --data shapes,shapes_vqa --max-steps 300

Preference pairs come from the data sets themselves (vlm/posttrain/preferences.py): a reference caption over the same caption
with a colour, shape, count or relation swapped, or over another image's caption; a question's answer over another
answer of the same kind. Held-out pairs (the val split) give the pairwise accuracy of each kind, printed and
written to metrics.json beside the model.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from vlm.cli.common import (
    UsageError,
    add_data_path_arguments,
    check_at_least_one,
    data_paths,
    run_command,
)
from vlm.cli.paths import DEFAULT_CHECKPOINT, REWARD_RUN_DIR
from vlm.data.catalog import build_dataset, parse_data_spec
from vlm.data.transforms import Preprocessing, build_transform
from vlm.evaluation.evaluate import load_samples
from vlm.model.checkpoint import load_model
from vlm.posttrain.preferences import preference_pairs
from vlm.posttrain.reward import RewardModel, pairwise_accuracy, save_reward_model, train_reward_model
from vlm.runtime import resolve_device
from vlm.training.loop import finetune_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-train-reward", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="model folder to start from")
    parser.add_argument("--out-dir", type=Path, default=REWARD_RUN_DIR, help="the reward model goes in OUT/model")
    parser.add_argument(
        "--data", default="shapes,shapes_vqa", help="caption and question sets (default shapes,shapes_vqa)"
    )
    parser.add_argument("--train-samples", type=int, default=2000, help="images or questions per set to make pairs of")
    parser.add_argument("--eval-samples", type=int, default=300, help="held-out (val) images or questions per set")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per step")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (the head and every part)")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_data_path_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def body() -> None:
        check_at_least_one(args, "train_samples", "eval_samples", "max_steps", "batch_size")
        try:
            names = [name for name, _ in parse_data_spec(args.data)]
        except ValueError as error:
            raise UsageError(str(error)) from None
        device = resolve_device(args.device)
        backbone, tokenizer = load_model(args.checkpoint, device)
        size = backbone.config.vision.image_size
        resize = Preprocessing(resize=backbone.config.vision.resize)  # the model's own input
        pairs = {}
        for split, count, seed in (("train", args.train_samples, args.seed), ("val", args.eval_samples, args.seed + 1)):
            samples = []
            for name in names:
                try:
                    samples += load_samples(build_dataset(name, split, data_paths(args), mode="eval"), count)
                except ValueError as error:
                    raise UsageError(f"--data {name}: {error}") from None
            pairs[split] = preference_pairs(samples, seed)
            if not pairs[split]:
                raise UsageError(f"--data {args.data}: no preference pairs could be made from the {split} split")
        model = RewardModel(backbone)
        config = finetune_config(
            args.lr,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            warmup_steps=args.warmup_steps,
            seed=args.seed,
        )
        progress = tqdm(total=args.max_steps, desc="reward", dynamic_ncols=True)

        def log(step: int, loss: float) -> None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.4f}")

        losses = train_reward_model(
            model,
            pairs["train"],
            tokenizer,
            build_transform(size, train=True, preprocessing=resize),
            config,
            device,
            log,
        )
        progress.close()
        accuracy = pairwise_accuracy(
            model, pairs["val"], tokenizer, build_transform(size, train=False, preprocessing=resize)
        )
        save_reward_model(args.out_dir / "model", model, tokenizer)
        tail = losses[-min(20, len(losses)) :]
        metrics = {
            "pairwise_accuracy": accuracy,
            "final_loss": sum(tail) / len(tail),
            "train_pairs": dict(Counter(p.kind for p in pairs["train"])),
            "held_out_pairs": dict(Counter(p.kind for p in pairs["val"])),
            "checkpoint": str(args.checkpoint),
        }
        (args.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print("held-out pairwise accuracy:")
        for kind, value in accuracy.items():
            count = len(pairs["val"]) if kind == "all" else metrics["held_out_pairs"][kind]
            print(f"  {kind:<14} {value:.3f}  ({count} pairs)")
        print(f"reward model in {args.out_dir / 'model'}")

    run_command("vlm-train-reward", body)


if __name__ == "__main__":
    main()
