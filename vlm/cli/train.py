"""vlm-train: train a model from a preset, with any config field overridden on the command line.

vlm-train                                     # the main job: built-in captions + questions + easy-VQA
vlm-train --preset tiny --max-steps 50 --out-dir runs/tiny
vlm-train --set decoder.depth=6 --lr-decoder 3e-4
torchrun --standalone --nproc_per_node=2 -m vlm.cli.train --data coco --coco-root /data/coco
vlm-train --out-dir runs/main --resume         # continue a run exactly where its last checkpoint left it
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

from vlm.cli.paths import MAIN_RUN_DIR
from vlm.data.catalog import DataPaths, build_dataset, limit, parse_data_spec, texts_of
from vlm.data.packing import check_sources, parse_sources, sample_source
from vlm.data.transforms import build_transform
from vlm.model.config import PRESETS, VLMConfig, apply_overrides, get_preset
from vlm.model.tokenizer import Tokenizer
from vlm.training.loop import TrainConfig, TrainingData, train

# Three sevenths captions, two sevenths easy-VQA with its yes/no answers worked out in steps ("asked red, saw blue,
# different, so no"), a seventh easy-VQA's shape questions, a seventh the built-in questions: every object named
# correctly on 93.2% and 94.4% of the built-in test images (two seeds) against 87.4% and 88.8% with a third of
# captions, easy-VQA 99.2% and 99.5% (docs/recipe_sweep.md).
DEFAULT_DATA = "shapes:3,shapes_vqa:1,easy_vqa_reasoned:2,easy_vqa_shapes:1"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default", help=f"model preset: {', '.join(PRESETS)}")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a model config field, e.g. --set decoder.depth=6 (repeatable)",
    )
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help=f"training mixture name:weight,... (default {DEFAULT_DATA})"
    )
    parser.add_argument("--val-samples", type=int, default=256, help="validation samples per data set")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run in --out-dir first")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    for field in dataclasses.fields(DataPaths):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", default=field.default, help=f"(default {field.default})"
        )
    defaults = TrainConfig(out_dir=str(MAIN_RUN_DIR))
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("weights", "betas"):
            continue
        default = getattr(defaults, field.name)
        flag = f"--{field.name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = type(default) if default is not None else int
            parser.add_argument(flag, type=kind, default=default, help=f"(default {default})")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        model_config = apply_overrides(get_preset(args.preset), args.overrides)
        mixture = parse_data_spec(args.data)
        train_config = TrainConfig(
            **{
                f.name: getattr(args, f.name)
                for f in dataclasses.fields(TrainConfig)
                if f.name not in ("weights", "betas")
            },
            weights=[w for _, w in mixture],
        )
    except ValueError as error:
        parser.error(str(error))
    run_dir = Path(train_config.out_dir)
    if args.overwrite and not args.resume and run_dir.exists():
        shutil.rmtree(run_dir)
    paths = DataPaths(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DataPaths)})
    try:
        data = load_training_data(model_config, mixture, paths, args.val_samples, run_dir if args.resume else None)
        if train_config.packed_sources:  # a misspelt source should stop here, not after the first steps' setup
            check_sources([sample_source(p) for p in data.train_parts], parse_sources(train_config.packed_sources))
    except (ValueError, FileNotFoundError) as error:
        print(f"vlm-train: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    on_validate = generation_metrics(mixture, paths, args.val_samples, data.tokenizer, train_config.blind)
    state = train(model_config, train_config, data, resume=args.resume, device=args.device, on_validate=on_validate)
    print(f"trained {state.step} steps; best validation loss {state.best_val_loss:.4f}; model in {run_dir / 'model'}")


def generation_metrics(
    mixture: list[tuple[str, float]], paths: DataPaths, count: int, tokenizer: Tokenizer, blind: bool
):
    """Validation by generating, as users will: CIDEr-D and object accuracy of captions, accuracy of answers."""
    from vlm.evaluation.evaluate import quick_metrics
    from vlm.inference.predict import Predictor
    from vlm.runtime import autocast_dtype

    caption_samples, question_samples = [], []
    for name, _ in mixture:
        part = limit(build_dataset(name, "val", paths), count)
        samples = [part[i] for i in range(len(part))]
        (caption_samples if samples and samples[0].question is None else question_samples).extend(samples)

    def on_validate(model, step: int) -> dict[str, float]:
        device = next(model.parameters()).device
        predictor = Predictor(model, tokenizer, device, autocast_dtype(device, "auto"), blind=blind)
        try:
            return quick_metrics(predictor, caption_samples, question_samples)
        finally:
            model.train()

    return on_validate


def load_training_data(
    model_config: VLMConfig,
    mixture: list[tuple[str, float]],
    paths: DataPaths,
    val_samples: int,
    resume_dir: Path | None,
) -> TrainingData:
    train_parts = [build_dataset(name, "train", paths) for name, _ in mixture]
    val_parts = [limit(build_dataset(name, "val", paths), val_samples) for name, _ in mixture]
    if resume_dir is not None:
        tokenizer = Tokenizer.load(resume_dir / "checkpoints" / "last")  # the ids the weights were trained with
    else:
        tokenizer = Tokenizer.build(text for part in train_parts for text in texts_of(part))
    from torch.utils.data import ConcatDataset

    size = model_config.vision.image_size
    return TrainingData(
        train_parts=train_parts,
        val=ConcatDataset(val_parts),
        tokenizer=tokenizer,
        train_transform=build_transform(size, train=True),
        eval_transform=build_transform(size, train=False),
    )


if __name__ == "__main__":
    main()
