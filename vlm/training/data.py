"""Building what the training loop trains on from a mixture spec: the data sets, the vocabulary, the transforms,
and validation by generating (captions and answers scored as users will see them).

The default mixture is the main job's, in tenths of each batch: three captions; three the built-in questions
answered after the steps that find the answer; two easy-VQA with its yes/no answers worked out in steps and one its
shape questions; one the built-in scenes' objects named top to bottom, a walk those steps take (docs/results.md says
why).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch.utils.data import ConcatDataset

from vlm.data.catalog import DataPaths, build_dataset, data_kind, limit, texts_of
from vlm.data.transforms import PREPROCESSING_DEFAULTS, Preprocessing, encoder_transform
from vlm.data.unreadable import readable
from vlm.evaluation.evaluate import quick_metrics
from vlm.inference.predict import Predictor
from vlm.model.config import VLMConfig
from vlm.model.tokenizer import Tokenizer
from vlm.runtime import autocast_dtype
from vlm.training.init_from import initialization_from
from vlm.training.loop import TrainingData, last_checkpoint

DEFAULT_DATA = "shapes:3,shapes_vqa_reasoned:3,easy_vqa_reasoned:2,easy_vqa_shapes:1,shapes_walks:1,shapes_what_is:0.5"


def generation_metrics(
    mixture: list[tuple[str, float]], paths: DataPaths, count: int, tokenizer: Tokenizer, blind: bool
) -> Callable:
    """Validation by generating, as users will: CIDEr-D and object accuracy of captions, accuracy of answers."""
    caption_samples, question_samples = [], []
    for name, _ in mixture:
        part = readable(limit(build_dataset(name, "val", paths), count), name)
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


def preprocessing_for(mixture: list[tuple[str, float]], requested: Preprocessing) -> Preprocessing:
    """The flags given, the rest from the data's kind: photo defaults when every set is photos; otherwise the
    built-in ones, which keep any text true (a photo's caption is not made false by them, only less augmented)."""
    kinds = {data_kind(name) for name, _ in mixture}
    return requested.filled(PREPROCESSING_DEFAULTS["photos" if kinds == {"photos"} else "built-in"])


def load_training_data(
    model_config: VLMConfig,
    mixture: list[tuple[str, float]],
    paths: DataPaths,
    val_samples: int,
    resume_dir: Path | None,
    varied_renderings: float = 0.0,
    preprocessing: Preprocessing | None = None,
    init_from: Path | None = None,
) -> TrainingData:
    """varied_renderings: the share of built-in scenes drawn with varied renderings. preprocessing: resolved
    (`preprocessing_for`); its resize must be model_config.vision.resize. init_from: a model folder whose weights
    the run starts from, its vocabulary extended with the training texts'."""
    train_parts = [build_dataset(name, "train", paths, varied=varied_renderings) for name, _ in mixture]
    val_parts = [readable(limit(build_dataset(name, "val", paths), val_samples), name) for name, _ in mixture]
    initial_weights = None
    if resume_dir is not None:
        checkpoint = last_checkpoint(resume_dir)
        if checkpoint is None:
            raise FileNotFoundError(f"{resume_dir} has no checkpoint to resume from")
        tokenizer = Tokenizer.load(checkpoint)  # the ids the weights were trained with
    elif init_from is not None:
        start = initialization_from(init_from, (text for part in train_parts for text in texts_of(part)))
        tokenizer, initial_weights = start.tokenizer, start.weights
    else:
        tokenizer = Tokenizer.build(text for part in train_parts for text in texts_of(part))
    assert preprocessing is None or preprocessing.resize in (None, model_config.vision.resize), "as inference will"
    return TrainingData(
        train_parts=train_parts,
        val=ConcatDataset(val_parts),
        tokenizer=tokenizer,
        train_transform=encoder_transform(model_config.vision, train=True, preprocessing=preprocessing),
        eval_transform=encoder_transform(model_config.vision, train=False, preprocessing=preprocessing),
        initial_weights=initial_weights,
    )
