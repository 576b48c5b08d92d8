import json

import pytest
import torch
from helpers import tiny_model, tiny_tokenizer
from PIL import Image

from vlm.cli import evaluate as evaluate_cli
from vlm.data.sample import Sample
from vlm.data.shapes import Scene, ShapeObject, ShapesDataset
from vlm.evaluation import evaluate as evaluate_module
from vlm.evaluation.evaluate import (
    CAPTION_TOKENS,
    caption_items,
    evaluate,
    format_table,
    predict_answers,
    predict_captions,
    quick_metrics,
    score_answers,
    score_captions,
)
from vlm.evaluation.metrics import coco_caption
from vlm.evaluation.metrics.cider import cider_d
from vlm.inference.generate import GenerationConfig
from vlm.inference.predict import ANSWER_TOKENS, Predictor
from vlm.model.checkpoint import save_model

SHORT = GenerationConfig(max_new_tokens=3)
COLOURS = ["red", "blue", "green", "yellow"]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = tiny_tokenizer()
    return tiny_model(tokenizer), tokenizer


@pytest.fixture()
def predictor(model_and_tokenizer):
    return Predictor(*model_and_tokenizer)


@pytest.fixture()
def coco_like(tmp_path):
    """A COCO-style caption set: image files, integer ids, several references per image."""
    samples = []
    for index, colour in enumerate(COLOURS):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (40, 30), colour).save(path)
        references = [f"a {colour} picture", f"A plain {colour} image."]
        samples.append(Sample(image=str(path), target=references[0], references=references, image_id=100 + index))
    return samples


def questions(tmp_path) -> list[Sample]:
    samples = []
    for index, colour in enumerate(COLOURS[:2]):
        path = tmp_path / f"q{index}.png"
        Image.new("RGB", (32, 32), colour).save(path)
        for offset, (question, answer, kind) in enumerate(
            [("what color is it?", colour, "other"), ("is it red?", "yes" if colour == "red" else "no", "yes/no")]
        ):
            meta = {"question_id": 10 * index + offset, "answer_type": kind}
            samples.append(Sample(str(path), answer, question, [answer] * 3, image_id=index, meta=meta))
    return samples


@pytest.fixture()
def knowing(model_and_tokenizer, monkeypatch):
    """A Predictor whose generation is replaced by known texts, read off the image each row is given: a caption
    names the colour of a red or blue image ("a red picture") and is "nothing" for others; "what color is it?" is
    answered with the image's colour, and every other question with "yes"."""
    predictor = Predictor(*model_and_tokenizer)
    tokenizer = predictor.tokenizer
    plain = {name: predictor.transform(Image.new("RGB", (32, 32), name)) for name in COLOURS}

    def colour_of(image: torch.Tensor) -> str:
        return min(plain, key=lambda name: float((image - plain[name]).abs().mean()))

    def text_for(prompt: list[int], image: torch.Tensor) -> str:
        colour = colour_of(image)
        if prompt == tokenizer.caption_prompt():
            return f"a {colour} picture" if colour in ("red", "blue") else "nothing"
        return colour if tokenizer.decode(prompt) == "what color is it?" else "yes"

    def generate_ids(image_batch, prompts, image_index, config):
        return [tokenizer.encode(text_for(p, image_batch[i])) for p, i in zip(prompts, image_index, strict=True)]

    monkeypatch.setattr(predictor, "generate_ids", generate_ids)
    return predictor


def test_each_caption_is_scored_against_its_own_images_references(knowing, coco_like, tmp_path):
    evaluate(knowing, coco_like, tmp_path, SHORT, batch_size=3, toolkit=False, quiet=True)
    captions = {100: "a red picture", 101: "a blue picture", 102: "nothing", 103: "nothing"}
    _, cider = cider_d(captions, {s.image_id: s.references for s in coco_like})
    assert cider[100] > 0 and cider[101] > 0 and cider[102] == cider[103] == 0.0
    rows = json.loads((tmp_path / "per_image.json").read_text())
    assert [(r["image_id"], r["caption"]) for r in rows] == list(captions.items())
    assert [r["scores"]["CIDEr"] for r in rows] == pytest.approx([cider[i] for i in captions])
    assert "BLEU, METEOR, ROUGE-L" in json.loads((tmp_path / "metrics.json").read_text())["unavailable"]
    assert [r["references"] for r in rows] == [s.references for s in coco_like]
    results = json.loads((tmp_path / "predictions.json").read_text())
    assert [(r["image_id"], r["caption"]) for r in results] == list(captions.items())


def test_each_answer_is_about_its_own_image_and_scored_against_its_own_question(knowing, tmp_path):
    # Two images (red, blue), two questions each; the known answers get the blue image's "is it red?" wrong. A right
    # answer scores 2/3: VQA averages min(1, matches / 3) over the ten leave-one-out subsets of the human answers,
    # and these questions have three.
    metrics = evaluate(knowing, questions(tmp_path), tmp_path / "eval", SHORT, quiet=True)
    rows = json.loads((tmp_path / "eval" / "per_question.json").read_text())
    assert [(r["question_id"], r["image_id"], r["question"], r["answer"]) for r in rows] == [
        (0, 0, "what color is it?", "red"),
        (1, 0, "is it red?", "yes"),
        (10, 1, "what color is it?", "blue"),
        (11, 1, "is it red?", "yes"),
    ]
    assert [r["score"] for r in rows] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 0.0])
    assert metrics["overall"] == pytest.approx(0.5)
    assert metrics["per_answer_type"] == pytest.approx({"other": 2 / 3, "yes/no": 1 / 3})


def test_captions_write_coco_results_metrics_and_report(predictor, coco_like, tmp_path):
    out = tmp_path / "eval"
    metrics = evaluate(predictor, coco_like, out, SHORT, batch_size=3, toolkit=False, quiet=True)
    assert metrics["images"] == 4 and isinstance(metrics["CIDEr"], float) and metrics["blind"] is False
    results = json.loads((out / "predictions.json").read_text())
    assert [r["image_id"] for r in results] == [100, 101, 102, 103]  # ids as the annotations give them
    assert all(isinstance(r["caption"], str) for r in results) and set(results[0]) == {"image_id", "caption"}
    assert json.loads((out / "metrics.json").read_text())["CIDEr"] == metrics["CIDEr"]
    rows = json.loads((out / "per_image.json").read_text())
    assert rows[0]["references"] == coco_like[0].references and "CIDEr" in rows[0]["scores"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "worst" in page and "a plain blue image" in page.lower()


def test_shapes_captions_report_objects_named_correctly(predictor, tmp_path):
    metrics = evaluate(predictor, ShapesDataset("test", num_images=3), tmp_path, SHORT, toolkit=False, quiet=True)
    assert 0.0 <= metrics["objects_named_correctly"] <= 1.0
    rows = json.loads((tmp_path / "per_image.json").read_text())
    assert len(rows) == 3 and all(isinstance(r["objects_correct"], bool) for r in rows)


def test_a_caption_folders_language_is_the_one_its_objects_are_read_in(coco_like):
    scene = Scene((ShapeObject("red", "circle", "small", 0.3, 0.5),), (240, 240, 240)).to_json()

    def items(language: str) -> list[Sample]:
        return [
            Sample(
                s.image,
                "un cercle rouge",
                references=["un cercle rouge"],
                image_id=s.image_id,
                meta={"scene": scene, "language": language},
            )
            for s in coco_like[:2]
        ]

    captions = ["un petit cercle rouge", "un cercle bleu"]
    metrics, rows = score_captions(items("fr"), captions, toolkit=False)
    assert metrics["objects_named_correctly"] == 0.5 and [r["objects_correct"] for r in rows] == [True, False]
    metrics, rows = score_captions(items("en"), captions, toolkit=False)  # French is not read as English
    assert metrics["objects_named_correctly"] == 0.0 and [r["objects_correct"] for r in rows] == [False, False]
    metrics, rows = score_captions(items("de"), captions, toolkit=False)  # a language with no words to read it
    assert "objects_named_correctly" not in metrics and "objects_correct" not in rows[0]


def test_questions_write_vqa_results_and_breakdowns(predictor, tmp_path):
    out = tmp_path / "eval"
    metrics = evaluate(predictor, questions(tmp_path), out, SHORT, batch_size=3, quiet=True)
    assert metrics["questions"] == 4 and metrics["metric"] == "vqa_soft_accuracy"
    assert set(metrics["per_answer_type"]) == {"other", "yes/no"}
    assert set(metrics["per_question_type"]) == {"what color", "is it"}
    results = json.loads((out / "predictions.json").read_text())
    assert [r["question_id"] for r in results] == [0, 1, 10, 11] and set(results[0]) == {"question_id", "answer"}
    assert "is it red?" in (out / "report.html").read_text()


def test_blind_evaluation_sees_the_same_zeros_for_every_image(model_and_tokenizer, coco_like, tmp_path):
    blind = Predictor(*model_and_tokenizer, blind=True)
    metrics = evaluate(blind, coco_like, tmp_path, SHORT, toolkit=False, quiet=True)
    captions = {r["caption"] for r in json.loads((tmp_path / "predictions.json").read_text())}
    assert metrics["blind"] is True and len(captions) == 1
    assert "Blind model" in (tmp_path / "report.html").read_text()


def test_a_caption_set_with_one_sample_per_reference_is_scored_once_per_image(predictor, coco_like):
    per_reference = [
        Sample(s.image, r, references=[r], image_id=s.image_id) for s in coco_like[:2] for r in s.references
    ]
    items = caption_items(per_reference)
    assert [i.image_id for i in items] == [100, 101]
    assert [i.references for i in items] == [coco_like[0].references, coco_like[1].references]
    metrics = evaluate(predictor, per_reference, None, SHORT, toolkit=False, quiet=True)
    assert metrics["images"] == 2


def test_caption_images_without_an_id_stay_apart_under_ids_of_their_own(coco_like):
    unnamed = [
        Sample(coco_like[0].image, "a red picture", image_id=""),
        Sample(coco_like[1].image, "a blue picture", references=["a blue picture", "blue"], image_id=None),
    ]
    items = caption_items(unnamed + coco_like[2:3])
    assert [(i.image, i.image_id, i.references) for i in items] == [
        (coco_like[0].image, "#0", ["a red picture"]),  # no references: its target is the one
        (coco_like[1].image, "#1", ["a blue picture", "blue"]),
        (coco_like[2].image, 102, coco_like[2].references),
    ]
    with pytest.raises(ValueError):  # one caption per image, never silently fewer
        score_captions(items, ["a caption", "another"], toolkit=False)


def test_toolkit_scores_without_java_say_what_is_missing(monkeypatch, coco_like):
    pytest.importorskip("pycocoevalcap")
    monkeypatch.setattr(coco_caption, "java_available", lambda: False)
    items = caption_items(coco_like)
    metrics, rows = score_captions(items, ["a red picture", "a blue", "green", ""])
    assert {"BLEU-4", "ROUGE-L", "CIDEr"} <= set(metrics) and "METEOR" in metrics["unavailable"]
    assert rows[0]["scores"]["BLEU-1"] > rows[3]["scores"]["BLEU-1"]


def test_quick_metrics_for_training_validation(predictor, tmp_path):
    shapes = ShapesDataset("val", num_images=2)
    metrics = quick_metrics(predictor, shapes, questions(tmp_path), limit=3)
    assert set(metrics) == {"val_cider", "val_objects_named_correctly", "val_vqa_accuracy"}
    assert all(isinstance(v, float) for v in metrics.values())


def test_quick_metrics_score_the_first_limit_samples_with_the_builtin_cider_only(
    knowing, coco_like, tmp_path, monkeypatch
):
    def no_toolkit(*args, **kwargs):
        raise AssertionError("validation during training must not start the toolkit (Java)")

    monkeypatch.setattr(evaluate_module, "caption_metrics", no_toolkit)
    metrics = quick_metrics(knowing, coco_like, questions(tmp_path), limit=2)
    # The first two images are red and blue, which the known captions name; the first two questions are about the
    # red image and both answered right (2/3 each with three human answers).
    first_two = {s.image_id: s.references for s in coco_like[:2]}
    expected, _ = cider_d({100: "a red picture", 101: "a blue picture"}, first_two)
    assert metrics == pytest.approx({"val_cider": expected, "val_vqa_accuracy": 2 / 3})


class RecordingPredictor:
    """Answers every question "yes", captions every image "a picture", and records the images (and image_index)
    and config of each call."""

    blind = False

    def __init__(self):
        self.calls = []

    def answer(self, images, questions, image_index, config):
        self.calls.append((list(images), list(image_index), config))
        return ["yes"] * len(questions)

    def caption(self, images, config):
        self.calls.append((list(images), config))
        return ["a picture"] * len(images)


def test_questions_are_answered_with_the_config_and_batch_size_given_with_a_progress_bar(tmp_path, capsys):
    predictor, samples = RecordingPredictor(), questions(tmp_path)
    evaluate(predictor, samples, None, SHORT, batch_size=3)
    assert [(len(images), index, config) for images, index, config in predictor.calls] == [
        (2, [0, 0, 1], SHORT),  # two questions about the first image, one about the second
        (1, [0], SHORT),
    ]
    assert "answering" in capsys.readouterr().err


def test_captions_are_generated_with_the_config_given_or_the_caption_default(coco_like, tmp_path):
    predictor, images = RecordingPredictor(), [s.image for s in coco_like]
    out = tmp_path / "runs" / "eval"  # its parent does not exist yet
    evaluate(predictor, coco_like, out, SHORT, batch_size=3, toolkit=False, quiet=True)
    assert predictor.calls == [(images[:3], SHORT), (images[3:], SHORT)]
    assert (out / "metrics.json").exists()
    predictor.calls.clear()
    predict_captions(predictor, coco_like)
    assert predictor.calls == [(images, GenerationConfig(max_new_tokens=CAPTION_TOKENS))]


def test_questions_about_one_image_share_its_encoding_and_images_without_an_id_do_not(capsys):
    ids_and_images = [("a", "a.png"), ("b", "b.png"), ("a", "a.png"), ("", "c.png"), ("", "d.png"), (None, "e.png")]
    samples = [Sample(image, "yes", "is it?", image_id=image_id) for image_id, image in ids_and_images]
    predictor = RecordingPredictor()
    assert predict_answers(predictor, samples) == ["yes"] * 6
    assert predictor.calls == [
        (
            ["a.png", "b.png", "c.png", "d.png", "e.png"],
            [0, 1, 0, 2, 3, 4],
            GenerationConfig(max_new_tokens=ANSWER_TOKENS),
        )
    ]
    assert capsys.readouterr().err == ""  # quiet by default: no progress bar
    config = GenerationConfig(max_new_tokens=5, strategy="beam")
    predictor.calls.clear()
    predict_answers(predictor, samples, config, batch_size=4)
    assert predictor.calls == [
        (["a.png", "b.png", "c.png"], [0, 1, 0, 2], config),
        (["d.png", "e.png"], [0, 1], config),
    ]


def test_evaluation_defaults_to_the_toolkit_and_a_progress_bar_and_takes_any_batch_size(
    knowing, coco_like, monkeypatch, capsys
):
    pytest.importorskip("pycocoevalcap")
    monkeypatch.setattr(coco_caption, "java_available", lambda: False)  # the toolkit, without METEOR's 10 s of Java
    by_one = evaluate(knowing, coco_like, None, SHORT, batch_size=1)
    assert "BLEU-4" in by_one and "captioning" in capsys.readouterr().err
    assert evaluate(knowing, coco_like, None, SHORT, batch_size=3, quiet=True) == by_one


def test_answer_rows_number_questions_without_an_id_and_keep_the_whole_reply():
    samples = [
        Sample("a.png", "no", "is it red?", ["no", "no", "yes"], image_id=1),
        Sample("b.png", "circle", "what shape is it?", image_id=2),  # no references: its target is the answer
    ]
    _, rows = score_answers(samples, ["blue, so no", "a circle"])
    assert rows == [
        {
            "question_id": 0,
            "image_id": 1,
            "question": "is it red?",
            "answer": "no",
            "reply": "blue, so no",
            "references": ["no", "no", "yes"],
            "score": pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3),  # leave-one-out over the three answers
        },
        {
            "question_id": 1,
            "image_id": 2,
            "question": "what shape is it?",
            "answer": "a circle",
            "reply": "a circle",
            "references": ["circle"],
            "score": 1.0,
        },
    ]


def test_the_terminal_table_aligns_scores_to_four_places_and_indents_breakdowns():
    metrics = {"CIDEr": 0.123456, "per_answer_type": {"yes/no": 0.5, "count": 3}, "images": 4}
    assert format_table(metrics, "shapes test").split("\n") == [
        "shapes test",
        "-----------",
        f"{'CIDEr':<32}   0.1235",
        "per_answer_type:",
        f"  {'yes/no':<30}   0.5000",
        f"  {'count':<30} 3",
        f"{'images':<32} 4",
    ]


def test_bad_inputs_are_refused_with_a_reason(predictor, coco_like, tmp_path):
    with pytest.raises(ValueError, match="mixes captions and questions"):
        evaluate(predictor, coco_like[:1] + questions(tmp_path)[:1], None, SHORT, quiet=True)
    with pytest.raises(ValueError, match="the data set is empty"):
        evaluate(predictor, [], None, SHORT, quiet=True)
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        evaluate(predictor, coco_like, None, SHORT, limit=0, quiet=True)
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        evaluate(predictor, coco_like, None, SHORT, batch_size=0, quiet=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model_and_tokenizer):
    directory = tmp_path_factory.mktemp("run") / "model"
    save_model(directory, *model_and_tokenizer)
    return directory


def run(argv, capsys):
    try:
        evaluate_cli.main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_next_to_the_checkpoint_and_prints_a_table(checkpoint, capsys):
    argv = ["--checkpoint", str(checkpoint), "--data", "shapes", "--limit", "2", "--builtin-only", "--blind"]
    code, out, _ = run(argv + ["--max-new-tokens", "3", "--device", "cpu"], capsys)
    assert code == 0
    out_dir = checkpoint.parent / "eval-shapes-test-blind"
    assert "CIDEr" in out and "objects_named_correctly" in out and str(out_dir) in out
    assert {"predictions.json", "metrics.json", "per_image.json", "report.html"} <= {p.name for p in out_dir.iterdir()}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--limit", "0"], "--limit must be at least 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--max-new-tokens", "0"], "max_new_tokens"),
    ],
)
def test_cli_user_errors_exit_2_with_a_message(checkpoint, capsys, extra, message):
    code, out, err = run(["--checkpoint", str(checkpoint), "--data", "shapes", *extra], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_missing_checkpoint_or_data_files_exit_2(tmp_path, checkpoint, capsys):
    code, _, err = run(["--checkpoint", str(tmp_path / "nowhere"), "--data", "shapes", "--limit", "1"], capsys)
    assert code == 2 and "nowhere" in err
    argv = ["--checkpoint", str(checkpoint), "--data", "coco", "--coco-root", str(tmp_path / "no_coco")]
    code, _, err = run(argv, capsys)
    assert code == 2 and "no_coco" in err


def test_cli_evaluates_a_caption_folder_and_names_a_bad_data_set(checkpoint, tmp_path, capsys):
    from vlm.data.shapes_french import write_caption_folder

    write_caption_folder(tmp_path / "fr", {"test": 2})
    argv = ["--checkpoint", str(checkpoint), "--data", f"folder:{tmp_path / 'fr'}", "--builtin-only"]
    code, out, _ = run(argv + ["--max-new-tokens", "3", "--device", "cpu"], capsys)
    out_dir = checkpoint.parent / "eval-folder-fr-test"
    assert code == 0 and "objects_named_correctly" in out and str(out_dir) in out
    assert json.loads((out_dir / "metrics.json").read_text())["images"] == 2
    code, _, err = run(["--checkpoint", str(checkpoint), "--data", "imagenet"], capsys)
    assert code == 2 and "--data 'imagenet': choose from" in err
