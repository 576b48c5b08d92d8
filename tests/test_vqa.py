import json
import runpy
import shutil
from pathlib import Path

import pytest

from vlm.data.errors import AnnotationError, MissingImagesError
from vlm.data.images import load_image
from vlm.data.vqa import VQADataset, most_frequent

TEN = ["red"] * 4 + ["dark red"] * 3 + ["orange"] * 3


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def vqa_set(root: Path, odd_images: dict[str, Path], naming: str = "2014", image_ids=(1, 2, 3)) -> tuple[Path, Path]:
    """Two questions per image: "what colour?" (answers TEN) and "is it a square?" (yes x5, no x5)."""
    image_dir = root / "val2014"
    image_dir.mkdir(parents=True)
    sources = ["cmyk.jpg", "exif_rotated.jpg", "rgba.png", "gray16.png"]
    for image_id, source in zip(image_ids, sources):
        name = f"COCO_val2014_{image_id:012d}.jpg" if naming == "2014" else f"{image_id:012d}.jpg"
        shutil.copy(odd_images[source], image_dir / name)  # PIL reads by content: a PNG named .jpg still loads
    questions, annotations = [], []
    for image_id in image_ids:
        for text, answers, kind in [
            ("What  colour is it?", TEN, "other"),
            ("Is it a square?", ["yes", "no"] * 5, "yes/no"),
        ]:
            question_id = 10 * image_id + len(questions) % 2
            questions.append({"image_id": image_id, "question": text, "question_id": question_id})
            annotations.append(
                {
                    "question_id": question_id,
                    "image_id": image_id,
                    "question_type": text.split()[0].lower(),
                    "answer_type": kind,
                    "multiple_choice_answer": answers[0],
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)
                    ],
                }
            )
    questions_file = write_json(root / "questions.json", {"data_subtype": "val2014", "questions": questions})
    annotations_file = write_json(root / "annotations.json", {"annotations": annotations})
    return questions_file, annotations_file


@pytest.mark.parametrize("naming", ["2014", "2017"])
def test_vqa_samples_keep_all_answers_and_train_on_the_most_frequent(tmp_path, odd_images, naming):
    questions_file, annotations_file = vqa_set(tmp_path, odd_images, naming)
    dataset = VQADataset(questions_file, annotations_file, tmp_path / "val2014")
    assert len(dataset) == 6 and dataset.num_skipped == 0
    colour, square = dataset[2], dataset[3]
    assert (colour.question, colour.target, colour.references) == ("What colour is it?", "red", TEN)
    assert (colour.task, colour.source, colour.image_id) == ("vqa", "vqa", 2)
    assert colour.meta == {"question_id": 20, "question_type": "what", "answer_type": "other"}
    assert square.target == "yes" and square.references.count("no") == 5  # a 5-5 tie goes to the first given
    assert all(load_image(sample.image).mode == "RGB" for sample in dataset)
    assert Path(colour.image).name.endswith("000000000002.jpg")


def test_eval_mode_yields_the_same_questions(tmp_path, odd_images):
    files = vqa_set(tmp_path, odd_images)
    train = VQADataset(*files, tmp_path / "val2014", mode="train")
    evaluation = VQADataset(*files, tmp_path / "val2014", mode="eval")
    assert [s.meta["question_id"] for s in train] == [s.meta["question_id"] for s in evaluation]


def test_most_frequent_breaks_ties_by_first_answer():
    assert most_frequent(["b", "a", "a", "b", "c"]) == "b"
    assert most_frequent(["a", "b", "b"]) == "b"


def test_missing_vqa_images_are_counted_by_image_not_question(tmp_path, odd_images):
    files = vqa_set(tmp_path, odd_images)
    (tmp_path / "val2014" / "COCO_val2014_000000000003.jpg").unlink()
    with pytest.raises(
        MissingImagesError, match=r"1 of 3 images named by .*questions\.json are missing, e\.g\. .*000000000003\.jpg"
    ):
        VQADataset(*files, tmp_path / "val2014")
    with pytest.warns(UserWarning, match=r"skipping 1 of 3 images"):
        dataset = VQADataset(*files, tmp_path / "val2014", on_missing="skip")
    assert dataset.num_skipped == 1 and len(dataset) == 4
    assert {s.image_id for s in dataset} == {1, 2}


def test_other_files_in_the_image_folder_are_ignored(tmp_path, odd_images):
    files = vqa_set(tmp_path, odd_images, image_ids=(1,))
    (tmp_path / "val2014" / "notes.txt").write_text("not an image")
    (tmp_path / "val2014" / "000000000001.png").write_text("wrong extension")
    assert len(VQADataset(*files, tmp_path / "val2014")) == 2


def annotation(question_id=1, image_id=1, answers=("red",) * 10) -> dict:
    return {"question_id": question_id, "image_id": image_id, "answers": [{"answer": a} for a in answers]}


QUESTION = {"question_id": 1, "image_id": 1, "question": "What colour?"}


@pytest.mark.parametrize(
    "questions, annotations, bad_file, problem",
    [
        ({"questions": [QUESTION]}, [annotation()], "annotations", r"the top level should be an object, got list"),
        ([QUESTION], {"annotations": [annotation()]}, "questions", r"the top level should be an object, got list"),
        ({"questions": [QUESTION]}, {"annotation": []}, "annotations", r"the top level has no 'annotations'"),
        (
            {"questions": [{"question_id": 1, "image_id": 1}]},
            {"annotations": [annotation()]},
            "questions",
            r"questions\[0\] \(question_id 1\) has no 'question'",
        ),
        (
            {"questions": [{**QUESTION, "image_id": "1"}]},
            {"annotations": [annotation()]},
            "questions",
            r"questions\[0\] \(question_id 1\): 'image_id' should be an integer, got str '1'",
        ),
        (
            {"questions": [QUESTION]},
            {"annotations": [annotation(answers=())]},
            "annotations",
            r"annotations\[0\] \(question_id 1\): 'answers' is empty",
        ),
        (
            {"questions": [QUESTION]},
            {"annotations": [annotation(answers=("red", ""))]},
            "annotations",
            r"annotations\[0\] \(question_id 1\) answers\[1\]: 'answer' is an empty string",
        ),
        (
            {"questions": [QUESTION]},
            {"annotations": [annotation(answers=("red", 2))]},
            "annotations",
            r"annotations\[0\] \(question_id 1\) answers\[1\]: 'answer' should be a string, got int 2",
        ),
        (
            {"questions": [QUESTION]},
            {"annotations": [{"question_id": 1, "image_id": 1, "answers": ["red"]}]},
            "annotations",
            r"annotations\[0\] \(question_id 1\) answers\[0\] should be an object, got str",
        ),
        (
            {"questions": [QUESTION]},
            {"annotations": [annotation(question_id=2)]},
            "annotations",
            r"no annotation for question_id 1",
        ),
        (
            {"questions": [QUESTION]},
            {"annotations": [annotation(image_id=7)]},
            "annotations",
            r"question_id 1 has image_id 7, but .*questions\.json says 1",
        ),
    ],
)
def test_malformed_vqa_files_name_the_file_and_the_first_bad_entry(tmp_path, questions, annotations, bad_file, problem):
    files = write_json(tmp_path / "questions.json", questions), write_json(tmp_path / "annotations.json", annotations)
    with pytest.raises(AnnotationError, match=rf"{bad_file}\.json: {problem}"):
        VQADataset(*files, tmp_path)


def test_vqa_file_that_is_not_json_is_named(tmp_path):
    (tmp_path / "annotations.json").write_text("not json")
    write_json(tmp_path / "questions.json", {"questions": []})
    with pytest.raises(AnnotationError, match=r"annotations\.json: not a valid JSON file"):
        VQADataset(tmp_path / "questions.json", tmp_path / "annotations.json", tmp_path)


def test_prepare_script_prints_counts_and_answer_types(tmp_path, odd_images, capsys):
    questions_file, annotations_file = vqa_set(tmp_path, odd_images)
    questions_file.rename(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json")
    annotations_file.rename(tmp_path / "v2_mscoco_val2014_annotations.json")
    (tmp_path / "val2014" / "COCO_val2014_000000000001.jpg").unlink()
    prepare = runpy.run_path(str(Path(__file__).resolve().parents[1] / "data" / "vqa" / "prepare.py"))
    prepare["main"](["--root", str(tmp_path)])
    train_line, val_line = capsys.readouterr().out.splitlines()
    assert train_line.startswith("vqa train2014: no v2_OpenEnded_mscoco_train2014_questions.json")
    assert val_line.startswith("vqa val2014: 4 questions on 2 images (1 images missing); ")
    assert "{'other': 2, 'yes/no': 2}" in val_line and "('red', 2)" in val_line
