"""Model folders the Hugging Face way: a Hub repo id resolves to a folder in the local Hub cache, a model folder is
pushed as it is, and its README.md model card is written from the config and the run folder's evaluations.

`huggingface_hub` is an optional extra (`pip install -e '.[hub]'`), imported only when a repo id or a push needs it.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from types import ModuleType

from vlm.model.checkpoint import CONFIG_FILE, CheckpointError, save_model
from vlm.model.tokenizer import Tokenizer
from vlm.model.vision_language_model import VisionLanguageModel

CARD_FILE = "README.md"
HUB_EXTRA = "pip install -e '.[hub]'"
# owner/name as the Hub spells it: one slash, no leading dot or dash, no "..".
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
# The figures a card shows for each kind of evaluation (vlm/evaluation): captions, then answers.
CARD_METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "objects_named_correctly", "overall")
METRIC_NAMES = {"overall": "accuracy (exact match)", "objects_named_correctly": "objects named correctly"}
COUNT_KEYS = ("images", "questions")


def is_repo_id(name: str) -> bool:
    return bool(REPO_ID.match(name)) and ".." not in name


def import_hub() -> ModuleType:
    try:
        import huggingface_hub
    except ImportError:
        raise CheckpointError(f"the Hugging Face Hub needs the huggingface_hub package: {HUB_EXTRA}") from None
    return huggingface_hub


def resolve_model_folder(name_or_dir: str | Path) -> Path:
    """A model folder on disk as it is; otherwise a Hub repo id, whose files come from the local Hub cache
    (downloaded first when online and not cached). Every failure is one CheckpointError line."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    name = str(name_or_dir)
    if not is_repo_id(name):
        raise CheckpointError(f"checkpoint folder {name!r} does not exist")
    hub = import_hub()
    try:
        return Path(hub.snapshot_download(name))
    except (hub.errors.HfHubHTTPError, hub.errors.HFValidationError, OSError, ValueError) as error:
        if hub.constants.HF_HUB_OFFLINE:
            raise CheckpointError(
                f"{name!r} is not a folder, and the Hugging Face Hub repo of that name is not in the local cache "
                f"({hub.constants.HF_HUB_CACHE}) while offline (HF_HUB_OFFLINE=1)"
            ) from None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{name!r} is not a folder, and the Hugging Face Hub could not give it: {reason}"
        ) from None


def save_pretrained(
    model: VisionLanguageModel,
    tokenizer: Tokenizer,
    directory: str | Path,
    run_dir: str | Path | None = None,
    name: str | None = None,
) -> Path:
    """The model folder (weights, config, vocabulary) plus its model card; `run_dir`: the training run whose
    config.json and eval-*/metrics.json the card reports; `name`: what the card calls it (default: the folder's)."""
    directory = Path(directory)
    save_model(directory, model, tokenizer)
    card = model_card(model, name or directory.name, None if run_dir is None else Path(run_dir))
    (directory / CARD_FILE).write_text(card)
    return directory


def push_to_hub(
    model: VisionLanguageModel,
    tokenizer: Tokenizer,
    repo_id: str,
    run_dir: str | Path | None = None,
    private: bool | None = None,
    token: str | None = None,
) -> str:
    """Save the model folder with its card and upload it to the Hub repo `repo_id` (created if missing). Returns the
    commit's URL."""
    if not is_repo_id(repo_id):
        raise CheckpointError(f"{repo_id!r} is not a Hugging Face Hub repo id (owner/name)")
    hub = import_hub()
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, tokenizer, folder, run_dir, name=repo_id)
        api = hub.HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="Upload vlm model")
    return str(commit.commit_url)


def evaluation_results(run_dir: Path) -> list[tuple[str, dict[str, float]]]:
    """(evaluation name, its figures) for each eval-*/metrics.json of a run folder, as vlm-evaluate wrote them."""
    results = []
    for path in sorted(run_dir.glob("eval-*/metrics.json")):
        metrics = json.loads(path.read_text())
        figures = {key: metrics[key] for key in CARD_METRICS + COUNT_KEYS if isinstance(metrics.get(key), int | float)}
        if metrics.get("blind"):
            figures["blind"] = True
        results.append((path.parent.name.removeprefix("eval-"), figures))
    return results


def _evaluation_section(run_dir: Path | None) -> list[str]:
    results = [] if run_dir is None else evaluation_results(run_dir)
    if not results:
        return ["No evaluation results were found beside this model (`vlm-evaluate` writes them to eval-*/)."]
    lines = ["Measured by `vlm-evaluate` on held-out test splits (eval-*/metrics.json of the training run).", ""]
    lines += ["| evaluation | examples | metric | value |", "|---|---|---|---|"]
    for name, figures in results:
        count = next((f"{figures[k]} {k}" for k in COUNT_KEYS if k in figures), "")
        label = name + (" (blind)" if figures.get("blind") else "")
        for key in CARD_METRICS:
            if key in figures:
                lines.append(f"| {label} | {count} | {METRIC_NAMES.get(key, key)} | {figures[key]:.3f} |")
    return lines


def _training_section(run_dir: Path | None) -> list[str]:
    config_path = None if run_dir is None else run_dir / CONFIG_FILE
    if config_path is None or not config_path.is_file():
        return ["The training run's config.json was not given, so its data and recipe are not recorded here."]
    train = json.loads(config_path.read_text()).get("train", {})
    names, weights = train.get("data") or [], train.get("weights") or []
    if names:
        mixture = ", ".join(f"{n} (weight {w:g})" for n, w in zip(names, weights)) if weights else ", ".join(names)
        lines = [f"Data sets (vlm's catalogue, `vlm/data/catalog.py`): {mixture}."]
    else:
        lines = [
            "The run's config.json does not name its data sets" + (f"; mixture weights {weights}." if weights else ".")
        ]
    recipe = {k: train[k] for k in ("max_steps", "batch_size", "optimizer", "lr_decoder", "seed") if k in train}
    steps = _steps_trained(run_dir / "metrics.jsonl")
    if steps is not None:  # a time budget may stop a run before max_steps
        recipe = {"steps trained": steps, **recipe}
    lines.append("Recipe: " + ", ".join(f"{k} {v}" for k, v in recipe.items()) + ".")
    return lines


def _steps_trained(metrics_log: Path) -> int | None:
    """The last step the run's metrics.jsonl logged."""
    if not metrics_log.is_file():
        return None
    steps = [json.loads(line).get("step") for line in metrics_log.read_text().splitlines() if line.strip()]
    steps = [s for s in steps if isinstance(s, int)]
    return max(steps) if steps else None


def model_card(model: VisionLanguageModel, name: str, run_dir: Path | None = None) -> str:
    """README.md of a model folder: the Hub's metadata header, the architecture, the training data, the evaluation
    figures of the run folder and how to use it."""
    config = model.config
    parameters = sum(p.numel() for p in model.parameters())
    vision, decoder = config.vision, config.decoder
    lines = [
        "---",
        "library_name: vlm",
        "license: mit",
        "pipeline_tag: image-to-text",
        "tags: [vision-language-model, image-captioning, visual-question-answering]",
        "---",
        "",
        f"# {name}",
        "",
        "A miniature vision-language model made with vlm: a ViT image encoder, a projector and a GPT decoder that "
        "caption images and answer questions about them.",
        "",
        "## Model",
        "",
        f"- {parameters / 1e6:.2f} M parameters; {vision.image_size}x{vision.image_size} px images in "
        f"{config.num_image_tokens} image tokens",
        f"- vision encoder: {vision.depth} layers of width {vision.width}, {vision.patch_size} px patches",
        f"- projector: {config.projector.mode}, {config.projector.reduction}x{config.projector.reduction} patches "
        "per image token",
        f"- decoder: {decoder.depth} layers of width {decoder.width}, {decoder.vocab_size} token rows, "
        f"{config.max_positions} positions" + (", prefix-LM attention over the image" if config.prefix_lm else ""),
        "- files: `model.safetensors` (weights), `config.json` (the full config), `vocab.json` (the tokenizer)",
        "",
        "## Training data",
        "",
        *_training_section(run_dir),
        "",
        "## Evaluation",
        "",
        *_evaluation_section(run_dir),
        "",
        "## Usage",
        "",
        "```python",
        "from vlm import Tokenizer, VisionLanguageModel",
        "from vlm.inference.predict import Predictor",
        "",
        f'model = VisionLanguageModel.from_pretrained("{name}")  # a Hub repo id or a local folder',
        f'tokenizer = Tokenizer.from_pretrained("{name}")',
        "predictor = Predictor(model, tokenizer)",
        'print(predictor.caption(["photo.png"])[0])',
        'print(predictor.answer(["photo.png"], ["what color is the circle?"])[0])',
        "```",
        "",
        f"or `vlm-caption photo.png --checkpoint {name}`, `vlm-ask --image photo.png --question ... --checkpoint "
        f"{name}` and `vlm-demo --checkpoint {name}`.",
        "",
    ]
    return "\n".join(lines)
