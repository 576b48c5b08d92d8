"""The built-in shapes set: deterministic, disjoint splits, scenes within the spec, pixels that show the scene,
captions and answers that agree with it, and data/shapes/prepare.py."""

import importlib.util
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm.data.batch import encode_text
from vlm.data.catalog import build_dataset
from vlm.data.coco import CocoCaptions
from vlm.data.images import load_image
from vlm.data.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    SPLIT_SIZES,
    WALK_QUESTIONS,
    Scene,
    ShapeObject,
    ShapesDataset,
    annotated_scene,
    canonical_caption,
    captions,
    reasoned_answer,
    render,
    robust_rendering,
    scene_seed,
    varied_rendering,
    what_is_questions,
)
from vlm.evaluation.metrics.shapes_accuracy import names_every_object
from vlm.model.config import get_preset
from vlm.model.tokenizer import Tokenizer

RELATIONS = ("left of", "right of", "above", "below")
PLURALS = {"circles": "circle", "squares": "square", "triangles": "triangle", "crosses": "cross"}
PLURAL = {shape: plural for plural, shape in PLURALS.items()}
PREPARE = Path(__file__).resolve().parents[1] / "data" / "shapes" / "prepare.py"


def scenes(split: str, count: int, seed: int = 0) -> list[dict]:
    return [annotated_scene(seed, split, i).scene.to_json() for i in range(count)]


# ---------------------------------------------------------------------------------------------------------------
# Determinism and splits


def test_same_seed_gives_identical_pixels_captions_and_questions():
    first, again = ShapesDataset("val", 6, seed=3, task="vqa"), ShapesDataset("val", 6, seed=3, task="vqa")
    assert len(first) == len(again)
    for i in range(len(first)):
        a, b = first[i], again[i]
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert (a.question, a.target, a.meta) == (b.question, b.target, b.meta)
    assert ShapesDataset("val", 6, seed=3).texts() == ShapesDataset("val", 6, seed=3).texts()


def test_another_seed_gives_other_scenes():
    assert scenes("val", 20, seed=0) != scenes("val", 20, seed=1)


def test_splits_never_share_an_image():
    objects = {
        split: {tuple(tuple(o.values()) for o in s["objects"]) for s in scenes(split, size)}
        for split, size in SPLIT_SIZES.items()
    }
    assert len(objects["val"]) == SPLIT_SIZES["val"]  # no repeat inside a split either
    assert not objects["train"] & objects["val"]
    assert not objects["train"] & objects["test"]
    assert not objects["val"] & objects["test"]


# ---------------------------------------------------------------------------------------------------------------
# Scenes and pixels


def test_scenes_hold_one_to_four_objects_of_every_colour_shape_and_size():
    val = scenes("val", SPLIT_SIZES["val"])
    assert Counter(len(s["objects"]) for s in val).keys() == {1, 2, 3, 4}
    objects = [o for s in val for o in s["objects"]]
    assert {o["colour"] for o in objects} == set(COLOURS) and len(COLOURS) >= 6
    assert {o["shape"] for o in objects} == set(SHAPES) and len(SHAPES) >= 4
    assert {o["size"] for o in objects} == set(SIZES) == {"small", "big"}
    texts = " ".join(ShapesDataset("val").texts())
    assert all(relation in texts for relation in RELATIONS)
    assert re.search(r"\btwo (small|big) \w+ \w+s\b", texts)  # counts occur in captions


def test_objects_stay_on_the_canvas_and_do_not_overlap():
    for scene in scenes("val", 100):
        boxes = []
        for o in scene["objects"]:
            half = SIZES[o["size"]] / 2
            assert half <= o["x"] <= 1 - half and half <= o["y"] <= 1 - half, o
            boxes.append((o["x"] - half, o["y"] - half, o["x"] + half, o["y"] + half))
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_each_object_shows_its_colour_at_its_centre_on_a_plain_background():
    dataset = ShapesDataset("test", 30)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample.image.mode == "RGB" and sample.image.size == (64, 64)
        pixels = np.asarray(sample.image).astype(int)
        for o in sample.meta["scene"]["objects"]:
            centre = pixels[int(o["y"] * 64), int(o["x"] * 64)]
            assert np.abs(centre - COLOURS[o["colour"]]).max() < 40, (sample.image_id, o, centre)
        corner = pixels[0, 0]
        assert corner.min() > 200, sample.image_id  # light background, far from every object colour


def test_image_size_is_respected():
    scene = Scene((ShapeObject("red", "circle", "big", 0.5, 0.5),), (240, 240, 240))
    assert render(scene, 32).size == (32, 32)
    assert ShapesDataset("val", 1, image_size=48)[0].image.size == (48, 48)


# ---------------------------------------------------------------------------------------------------------------
# Captions and questions


def test_canonical_caption_names_every_group_once_left_to_right():
    counts = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4}
    for index in range(SPLIT_SIZES["val"]):
        annotated = annotated_scene(0, "val", index)
        canonical = annotated.captions[0]
        assert names_every_object(canonical, annotated.scene), canonical
        groups: dict[tuple[str, str, str], list[float]] = {}
        for o in annotated.scene.objects:
            groups.setdefault((o.size, o.colour, o.shape), []).append(o.x)
        # "<count> <size> <colour> <shape>" phrases joined by ", " and a final " and "
        phrases = [p.split() for p in re.split(r", | and ", canonical)]
        assert all(len(p) == 4 and p[0] in counts for p in phrases), canonical
        singular = [shape if counts[count] == 1 else PLURALS.get(shape) for count, _, _, shape in phrases]
        keys = [(size, colour, shape) for (_, size, colour, _), shape in zip(phrases, singular)]
        assert sorted(keys) == sorted(groups), canonical
        assert [counts[p[0]] for p in phrases] == [len(groups[k]) for k in keys], canonical
        leftmost = [min(groups[k]) for k in keys]
        assert leftmost == sorted(leftmost), canonical


def test_canonical_caption_grammar():
    scene = Scene(
        (
            ShapeObject("blue", "square", "small", 0.8, 0.2),
            ShapeObject("red", "circle", "big", 0.2, 0.3),
            ShapeObject("blue", "square", "small", 0.6, 0.8),
            ShapeObject("orange", "cross", "small", 0.4, 0.7),
        ),
        (240, 240, 240),
    )
    assert canonical_caption(scene) == "a big red circle, a small orange cross and two small blue squares"


def test_longest_references_fit_the_smallest_text_context():
    # four different objects with the longest words: the longest captions the set can write
    longest = Scene(
        tuple(
            ShapeObject(c, "triangle", "small", x, 0.5)
            for c, x in zip(("purple", "orange", "yellow", "green"), (0.1, 0.3, 0.6, 0.9))
        ),
        (240, 240, 240),
    )
    references = captions(longest, random.Random(0))
    tokenizer = Tokenizer.build(references)
    positions = 3 + max(len(tokenizer.encode(c)) for c in references)  # <bos> <caption> ... <eos>
    assert positions <= min(get_preset(p).max_text_len for p in ("tiny", "default"))


def test_references_are_varied_wordings_of_the_same_objects():
    annotated = annotated_scene(0, "val", 0)
    assert len(set(annotated.captions)) == len(annotated.captions) >= 4


AXIS = {"left of": ("x", -1), "right of": ("x", 1), "above": ("y", -1), "below": ("y", 1)}


def _name(o: dict) -> str:
    return f"{o['colour']} {o['shape']}"


def _on_side(a: dict, relation: str, b: dict, clearer: bool = False) -> bool:
    """a is on that side of b; clearer: and further along that axis than along the other (the set's convention)."""
    axis, sign = AXIS[relation]
    other = "y" if axis == "x" else "x"
    along, across = a[axis] - b[axis], a[other] - b[other]
    return along * sign > 0 and (not clearer or abs(along) >= abs(across))


def expected_answer(question: str, objects: list[dict]) -> str:
    """The answer worked out from the scene alone, independently of how shapes.py wrote it."""
    numbers = ["zero", "one", "two", "three", "four"]
    if m := re.fullmatch(r"what color is the (\w+)\?", question):
        [match] = [o for o in objects if o["shape"] == m[1]]
        return match["colour"]
    if m := re.fullmatch(r"what shape is the (\w+) object\?", question):
        [match] = [o for o in objects if o["colour"] == m[1]]
        return match["shape"]
    if m := re.fullmatch(r"what size is the (\w+ \w+)\?", question):
        [match] = [o for o in objects if _name(o) == m[1]]
        return match["size"]
    if question == "how many shapes are there?":
        return numbers[len(objects)]
    if m := re.fullmatch(r"how many (\w+) are there\?", question):
        return numbers[sum(o["shape"] == PLURALS[m[1]] for o in objects)]
    if m := re.fullmatch(r"is there an? (\w+ \w+)\?", question):
        return "yes" if any(_name(o) == m[1] for o in objects) else "no"
    if m := re.fullmatch(r"is the (\w+ \w+) (left of|right of|above|below) the (\w+ \w+)\?", question):
        [a], [b] = ([o for o in objects if _name(o) == name] for name in (m[1], m[3]))
        return "yes" if _on_side(a, m[2], b) else "no"
    if m := re.fullmatch(r"what is (left of|right of|above|below) the (\w+ \w+)\?", question):
        [b] = [o for o in objects if _name(o) == m[2]]
        matches = [_name(o) for o in objects if o is not b and _on_side(o, m[1], b, clearer=True)]
        assert len(matches) == 1, f"{question!r} has {len(matches)} answers: {matches}"
        return matches[0]
    raise AssertionError(f"a question this test does not know: {question!r}")


def test_answers_agree_with_the_scene():
    dataset = ShapesDataset("val", task="vqa")
    kinds = Counter()
    for annotated in dataset.scenes:
        objects = annotated.scene.to_json()["objects"]
        for question, answer in annotated.questions:
            assert answer == expected_answer(question, objects), (question, answer, objects)
            assert 1 <= len(answer.split()) <= 3
            kinds[" ".join(question.split()[:2])] += 1
    assert set(kinds) == {"what color", "what shape", "what size", "how many", "is there", "is the", "what is"}


# ---------------------------------------------------------------------------------------------------------------
# The Dataset


def test_caption_samples_carry_the_canonical_target_all_references_and_the_scene():
    dataset = ShapesDataset("test", 4)
    assert len(dataset) == 4  # one sample per image: the evaluation view
    sample = dataset[2]
    annotated = annotated_scene(0, "test", 2)
    assert sample.task == "caption" and sample.question is None
    assert sample.target == annotated.captions[0] and sample.references == list(annotated.captions)
    assert (sample.image_id, sample.source) == ("test-2", "shapes")
    assert json.loads(json.dumps(sample.meta["scene"])) == annotated.scene.to_json()


def test_all_references_gives_one_sample_per_reference():
    dataset = ShapesDataset("val", 5, all_references=True)
    expected = [c for i in range(5) for c in annotated_scene(0, "val", i).captions]
    assert [dataset[i].target for i in range(len(dataset))] == expected


def test_vqa_samples_are_one_per_question():
    dataset = ShapesDataset("val", 5, task="vqa")
    expected = [qa for i in range(5) for qa in annotated_scene(0, "val", i).questions]
    assert [(dataset[i].question, dataset[i].target) for i in range(len(dataset))] == expected
    assert dataset[0].task == "vqa" and dataset[0].references == [dataset[0].target]


def test_texts_hold_every_caption_question_and_answer():
    dataset = ShapesDataset("val", 5, task="vqa")
    texts = set(dataset.texts())
    assert all(dataset[i].question in texts and dataset[i].target in texts for i in range(len(dataset)))
    assert set(annotated_scene(0, "val", 4).captions) <= texts


def test_unknown_split_or_task_is_named():
    with pytest.raises(ValueError, match="split must be one of .* got 'training'"):
        ShapesDataset("training")
    with pytest.raises(ValueError, match="task must be 'caption', 'vqa', 'walk' or 'what_is', got 'captions'"):
        ShapesDataset("val", task="captions")


# ---------------------------------------------------------------------------------------------------------------
# data/shapes/prepare.py


@pytest.fixture(scope="module")
def prepare():
    spec = importlib.util.spec_from_file_location("shapes_prepare", PREPARE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_writes_images_coco_captions_questions_and_a_contact_sheet(prepare, tmp_path, capsys):
    prepare.main(["--out", str(tmp_path), "--splits", "val,test", "--num-images", "3", "--seed", "2"])
    printed = capsys.readouterr().out
    for split in ("val", "test"):
        assert sorted(p.name for p in (tmp_path / split).iterdir()) == ["000000.png", "000001.png", "000002.png"]
        coco = CocoCaptions(tmp_path / f"captions_{split}.json", tmp_path / split, mode="eval")
        dataset = ShapesDataset(split, 3, seed=2)
        assert [s.references for s in coco] == [list(a.captions) for a in dataset.scenes]
        questions = json.loads((tmp_path / f"questions_{split}.json").read_text())["questions"]
        assert [(q["question"], q["answer"]) for q in questions] == [qa for a in dataset.scenes for qa in a.questions]
        assert np.array_equal(np.asarray(load_image(coco[1].image)), np.asarray(dataset[1].image))  # lossless
    sheet = Image.open(tmp_path / "contact_sheet.png")
    assert sheet.width >= 64 * 3 and sheet.height >= 64
    for line in ("objects per image", "colours:", "shapes:", "sizes:", "relations", "caption words", "tokens"):
        assert line in printed
    assert "images shared between splits: 0" in printed


def test_prepare_quiet_prints_only_where_the_files_went(prepare, tmp_path, capsys):
    prepare.main(["--out", str(tmp_path), "--splits", "test", "--num-images", "1", "--quiet"])
    assert capsys.readouterr().out.startswith("wrote 1 images of test to")
    assert (tmp_path / "test" / "000000.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--splits", "dev"], "unknown split 'dev' in --splits"),
        (["--num-images", "0"], "--num-images must be at least 1, got 0"),
        (["--image-size", "4"], "--image-size must be at least 8 pixels, got 4"),
    ],
)
def test_prepare_rejects_bad_arguments_by_name(prepare, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit):
        prepare.main(["--out", str(tmp_path), *args])
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Reasoned answers and the robustness split


def read_answer(question: str, description: str) -> str:
    """The answer worked out from the reasoned answer's steps alone, with none of the scene: what the model is to do
    after writing them. Independent of how shapes.py wrote the steps."""
    numbers = ["zero", "one", "two", "three", "four"]
    steps = [step.split() for step in description.split(", ")]
    if m := re.fullmatch(r"what color is the (\w+)\?", question):
        ((shape, colour),) = steps  # the asked object, then its colour
        assert shape == m[1]
        return colour
    if m := re.fullmatch(r"what shape is the (\w+) object\?", question):
        ((colour, shape),) = steps
        assert colour == m[1]
        return shape
    if m := re.fullmatch(r"is there an? (\w+) (\w+)\?", question):
        if steps == [["no", PLURAL[m[2]]]]:
            return "no"
        # each object of the asked shape, its colour, and whether that is the asked colour
        assert all(s == m[2] and v == ("same" if c == m[1] else "different") for s, c, v in steps)
        return "yes" if any(v == "same" for *_, v in steps) else "no"
    if m := re.fullmatch(r"what is (left of|right of|above|below) the (\w+ \w+)\?", question):
        # the walk along the relation's axis, each object on the asked side of the asked one with its relation to
        # it: the answer is the one in the asked relation
        names = [" ".join(step[1:3]) for step in steps]
        reached = names.index(m[2])
        before = m[1] in ("left of", "above")
        assert (reached == len(steps) - 1) if before else len(steps) > reached + 1
        for i, step in enumerate(steps):  # a relation after the objects on the asked side only
            assert bool(step[3:]) == (i < reached if before else i > reached)
        (found,) = [" ".join(step[1:3]) for step in steps if " ".join(step[3:]) == m[1]]
        return found
    if m := re.fullmatch(r"is the (\w+ \w+) (left of|right of|above|below) the (\w+ \w+)\?", question):
        # the walk up to the first of the two; its colour beside the first object's, then its shape; which it is
        *walk, colours, shapes, (order, *relation) = steps
        reached = walk[-1][1:]
        assert reached in (m[1].split(), m[3].split()) and " ".join(relation) == m[2]
        for (mine, theirs, verdict), asked in zip((colours, shapes), m[1].split()):
            assert theirs == asked and verdict == ("same" if mine == theirs else "different")
        assert [colours[0], shapes[0]] == reached
        assert order == ("first" if colours[2] == shapes[2] == "same" else "second")
        return "yes" if (order == "first") == (m[2] in ("left of", "above")) else "no"
    # The others name objects as the caption does, "<size> <colour> <shape>", up to where the answer is.
    assert all(step[0] in ("small", "big") for step in steps)
    size, colour, shape = steps[-1][:3]
    if m := re.fullmatch(r"how many (\w+) are there\?", question):
        counts = [int(step[3]) for step in steps if len(step) == 4]
        assert counts == list(range(1, len(counts) + 1))  # counted as they are named
        assert all((len(step) == 4) == (m[1] in ("shapes", PLURAL[step[2]])) for step in steps)
        return numbers[len(counts)]
    if m := re.fullmatch(r"what size is the (\w+) (\w+)\?", question):
        # Each object of the asked shape with its colour beside the asked one, same only at the last, the asked one.
        compared = [step for step in steps if step[2] == m[2]]
        assert all(step[3:] == [step[1], m[1], "different"] for step in compared[:-1])
        assert compared[-1] is steps[-1] and steps[-1][3:] == [m[1], m[1], "same"]
        assert all(len(step) == 3 for step in steps if step[2] != m[2])
        assert [colour, shape] == [m[1], m[2]]
        return size
    raise AssertionError(f"a question this test does not know: {question!r}")


def test_reasoned_answers_name_the_objects_looked_at_in_order_then_the_plain_answer():
    plain = ShapesDataset("val", 40, task="vqa")
    reasoned = ShapesDataset("val", 40, task="vqa", reasoned=True)
    for i in range(len(plain)):
        question, answer, target = plain[i].question, plain[i].target, reasoned[i].target
        assert reasoned[i].question == question and reasoned[i].references == [answer]
        description, separator, final = target.rpartition(", so ")
        assert separator and final == answer
        scene = reasoned.scenes[reasoned.index[i][0]].scene
        vertical = re.fullmatch(r"(is the .* |what is )(above|below) .*|how many .*", question)
        order = sorted(scene.objects, key=lambda o: o.y if vertical else o.x)
        steps = [step.split() for step in description.split(", ")]
        if question.startswith("is the "):
            steps = steps[:-3]  # the last three compare the object reached with the question's first
        if question.startswith(("what size", "how many", "is the ")):  # size, colour, shape (and a count)
            assert [s[:3] for s in steps] == [[o.size, o.colour, o.shape] for o in order][: len(steps)]
        if question.startswith("what is"):  # the walk, with the relation of each object on the asked side
            asked = question.removesuffix("?").split()[-2:]
            (b,) = [o for o in scene.objects if [o.colour, o.shape] == asked]
            before = bool(re.match("what is (left of|above)", question))  # the answer is before b in the walk
            walked = order[: order.index(b) + 1] if before else order
            assert [s[:3] for s in steps] == [[o.size, o.colour, o.shape] for o in walked]
            for step, o in zip(steps, walked):  # the clearer of the two offsets from b, in the question's words
                dx, dy = b.x - o.x, b.y - o.y
                horizontal = "left of" if dx > 0 else "right of"
                relation = horizontal if abs(dx) >= abs(dy) else "above" if dy > 0 else "below"
                on_asked_side = order.index(o) < order.index(b) if before else order.index(o) > order.index(b)
                assert " ".join(step[3:]) == (relation if on_asked_side else "")
        if question.startswith("is there") and steps[0][0] != "no":  # shape, colour, verdict
            assert [s[:2] for s in steps] == [[o.shape, o.colour] for o in order if o.shape == steps[0][0]]
        if question.startswith("how many"):
            assert len(steps) == len(scene.objects)  # nothing to stop at: every object


def test_every_answer_can_be_read_off_its_description():
    """What the reasoned answers are for: the objects the model names first hold the answer, the last one named
    (or, for "what is left of", the one named with that relation)."""
    dataset = ShapesDataset("val", task="vqa", reasoned=True)
    kinds, misread = Counter(), Counter()
    for i in range(len(dataset)):
        sample = dataset[i]
        kind = " ".join(sample.question.split()[:2])
        kinds[kind] += 1
        misread[kind] += read_answer(sample.question, sample.target.rpartition(", so ")[0]) != sample.references[0]
    assert set(kinds) == {"what color", "what shape", "what size", "how many", "is there", "is the", "what is"}
    assert not sum(misread.values()), misread


def test_reasoned_targets_are_in_the_vocabulary_texts_and_fit_the_default_context():
    dataset = ShapesDataset("val", 60, task="vqa", reasoned=True)
    texts = set(dataset.texts())
    tokenizer = Tokenizer.build(texts)
    room = get_preset("default").max_text_len
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample.target in texts
        length = len(tokenizer.question_prompt(sample.question)) + len(tokenizer.encode(sample.target)) + 1
        assert length <= room, (sample.question, sample.target, length)


def test_the_robust_split_draws_the_test_scenes_with_other_renderings():
    plain, robust = ShapesDataset("test", 40), ShapesDataset("test", 40, robust=True)
    kinds = set()
    for i in range(len(plain)):
        a, b = plain[i], robust[i]
        assert (a.target, a.references, a.meta) == (b.target, b.references, b.meta)  # same scene, same texts
        pixels = np.asarray(b.image).astype(int)
        assert not np.array_equal(np.asarray(a.image), pixels)
        assert pixels[:4, :4].mean() < 220  # darker than any training background (220-255)
        for o in b.meta["scene"]["objects"]:
            centre = pixels[int(o["y"] * 64), int(o["x"] * 64)]
            # JPEG's halved colour resolution bleeds the background into a small cross's thin arms
            assert np.abs(centre - COLOURS[o["colour"]]).max() < 60, (b.image_id, o, centre)
        scene = annotated_scene(0, "test", i).scene
        rendering = robust_rendering(scene, random.Random(f"robust-{scene_seed(0, 'test', i)}"))
        assert all(0.85 <= s <= 1.15 for s in rendering.size_scale)
        assert all(abs(d) <= 15 for shift in rendering.colour_shift for d in shift)
        assert rendering.jpeg_quality == 75 and max(rendering.background) < 220
        kinds.add(rendering.supersample)
    assert kinds == {1, 2, 3}  # no anti-aliasing, 2x bilinear, 3x box: never training's 4x Lanczos
    again = ShapesDataset("test", 3, robust=True)
    assert np.array_equal(np.asarray(again[2].image), np.asarray(robust[2].image))


def test_varied_renderings_are_drawn_from_the_seeded_generator_for_the_chosen_share():
    import torch

    clean, varied = ShapesDataset("train", 60), ShapesDataset("train", 60, varied=0.5)

    def image_under_seed(dataset, i, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return np.asarray(dataset[i].image)

    changed = [not np.array_equal(np.asarray(clean[i].image), image_under_seed(varied, i, i)) for i in range(60)]
    assert 15 <= sum(changed) <= 45  # about half the draws
    for i in range(5):  # the same seed, the same picture (resume and any worker see the same images)
        assert np.array_equal(image_under_seed(varied, i, 7), image_under_seed(varied, i, 7))
    always = ShapesDataset("train", 10, varied=1.0)
    assert all(not np.array_equal(image_under_seed(always, i, i), np.asarray(clean[i].image)) for i in range(10))
    assert clean[3].target == always[3].target and clean[3].meta == always[3].meta  # the texts stay true
    with pytest.raises(ValueError, match="share"):
        ShapesDataset("train", 1, varied=1.5)


def test_varied_renderings_stay_within_their_documented_ranges():
    rng = random.Random(0)
    scene = annotated_scene(0, "train", 0).scene
    renderings = [varied_rendering(scene, rng) for _ in range(400)]
    assert all(0.85 <= s <= 1.15 for r in renderings for s in r.size_scale)
    assert all(abs(d) <= 15 for r in renderings for shift in r.colour_shift for d in shift)
    assert min(min(r.background) for r in renderings) >= 180 and max(max(r.background) for r in renderings) <= 255
    qualities = [r.jpeg_quality for r in renderings]
    assert 100 < qualities.count(None) < 300 and all(60 <= q <= 95 for q in qualities if q is not None)
    assert {r.supersample for r in renderings} == {1, 2, 3, 4}


@pytest.mark.parametrize("name", ["shapes_robust", "shapes_vqa_robust"])
def test_the_robust_split_is_for_evaluation_only(name):
    with pytest.raises(ValueError, match=f"{name} is a held-out test split"):
        build_dataset(name, "train")
    assert len(build_dataset(name, "test")) == len(build_dataset(name.replace("_robust", ""), "test"))


def test_reading_samples_give_the_description_and_train_the_final_answer_alone():
    reasoned = ShapesDataset("val", 20, task="vqa", reasoned=True)
    reading = ShapesDataset("val", 20, task="vqa", reading=True)
    tokenizer = Tokenizer.build(reasoned.texts())
    room = get_preset("default").max_text_len
    for i in range(len(reasoned)):
        full, read = reasoned[i], reading[i]
        assert read.given.endswith(", so") and read.target == " " + full.references[0]
        ids, is_target = encode_text(tokenizer, full.question, full.target, room)
        read_ids, read_is_target = encode_text(tokenizer, read.question, read.target, room, read.given)
        assert read_ids == ids  # the very tokens of the reasoned answer, so what is learned carries over
        answer_tokens = len(tokenizer.encode(read.target))
        assert read_is_target == [False] * (len(ids) - answer_tokens - 1) + [True] * (answer_tokens + 1)


def test_walk_samples_name_every_object_top_to_bottom():
    """shapes_walks: one sample an image, every object as the caption names it, top to bottom."""
    dataset = build_dataset("shapes_walks", "val")
    assert len(dataset) == SPLIT_SIZES["val"]
    texts = set(dataset.texts())
    for i in range(6):
        sample, scene = dataset[i], dataset.scenes[i].scene
        expected = ", ".join(f"{o.size} {o.colour} {o.shape}" for o in sorted(scene.objects, key=lambda o: o.y))
        assert sample.question == "name the objects from top to bottom" == list(WALK_QUESTIONS)[0]
        assert sample.target == expected and sample.references == [expected] and {sample.question, expected} <= texts


def test_what_is_questions_are_every_one_a_scene_answers():
    """shapes_what_is: every "what is <relation> the <b>?" with one answer, uniquely named; the questions ask one."""
    asked = 0
    for annotated in ShapesDataset("val").scenes:
        objects = annotated.scene.to_json()["objects"]
        names = [_name(o) for o in objects]
        unique = [name for name in names if names.count(name) == 1]
        expected = []
        for b in (o for o in objects if _name(o) in unique):
            for rel in ("left of", "right of", "above", "below"):
                answers = [_name(o) for o in objects if o is not b and _on_side(o, rel, b, clearer=True)]
                if len(answers) == 1 and answers[0] in unique:
                    expected.append((f"what is {rel} the {_name(b)}?", answers[0]))
        pairs = what_is_questions(annotated.scene)
        assert sorted(pairs) == sorted(expected) and len(set(pairs)) == len(pairs)
        for qa in annotated.questions:
            if qa[0].startswith("what is "):
                assert qa in pairs
                asked += 1
    assert asked > 20


def test_what_is_samples_carry_reasoned_answers_in_the_vocabulary_texts():
    dataset = build_dataset("shapes_what_is", "val")
    assert len(dataset) == sum(len(what_is_questions(a.scene)) for a in dataset.scenes) > SPLIT_SIZES["val"]
    texts = set(dataset.texts())
    for i in range(0, len(dataset), 37):
        sample = dataset[i]
        scene = dataset.scenes[dataset.index[i][0]].scene
        (answer,) = sample.references
        assert (sample.question, answer) in what_is_questions(scene)
        assert sample.target == reasoned_answer(scene, sample.question, answer)
        assert read_answer(sample.question, sample.target.rpartition(", so ")[0]) == answer
        assert {sample.question, sample.target} <= texts
