"""Packing every text about an image into one sequence trains exactly what separate sequences would."""

import pytest
import torch
from helpers import ColourSamples, tiny_model, tiny_tokenizer

from vlm.data.batch import collate, encode_example, encode_packed
from vlm.data.mixture import TokenizedDataset
from vlm.data.packing import ImageGroups, draw_in_proportion, group_by_image
from vlm.data.shapes import ShapesDataset
from vlm.data.transforms import build_transform
from vlm.model import masks
from vlm.model.tokenizer import Tokenizer

TEXTS = [("what color is the circle?", "red"), (None, "two blue squares above a green star"), ("is it?", "yes")]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_positions_start_again_after_the_image_for_every_text():
    segment_ids = torch.tensor([[0, 0, 0, 1, 1, 2, -1, -1]])
    assert masks.packed_position_ids(segment_ids, num_image=4).tolist() == [[0, 1, 2, 3, 4, 5, 6, 4, 5, 4, 0, 0]]


@pytest.mark.parametrize("num_prefix", [0, 2])
def test_a_text_sees_the_image_and_its_own_earlier_tokens_only(num_prefix):
    mask = masks.packed_attention_mask(torch.tensor([[0, 0, 1, 1]]), num_image=2, num_prefix=num_prefix)[0, 0]
    expected = torch.tensor(
        [
            [1, int(num_prefix > 0), 0, 0, 0, 0],  # image tokens: causal, or both ways under prefix-LM
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],  # text 0
            [1, 1, 1, 1, 0, 0],
            [1, 1, 0, 0, 1, 0],  # text 1 skips text 0
            [1, 1, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("prefix_lm", [True, False])
def test_packed_loss_and_gradients_equal_those_of_separate_rows(tokenizer, prefix_lm):
    model = tiny_model(tokenizer)
    model.config.prefix_lm = prefix_lm
    image = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    max_len = model.config.max_text_len
    # A second, shorter packed row puts padding (segment -1) next to a longer one.
    packed = collate(
        [
            encode_packed(tokenizer, image, TEXTS, max_len, 100),
            encode_packed(tokenizer, image, TEXTS[:1], max_len, 100),
        ],
        tokenizer.pad_id,
    )
    separate = collate(
        [encode_example(tokenizer, image, q, t, max_len) for q, t in TEXTS + TEXTS[:1]], tokenizer.pad_id
    )
    assert "segment_ids" in packed and "segment_ids" not in separate
    gradients = []
    for batch in (packed, separate):
        model.zero_grad()
        loss = model(**batch)
        loss.backward()
        gradients.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (packed_loss, packed_grads), (separate_loss, separate_grads) = gradients
    torch.testing.assert_close(packed_loss, separate_loss)
    for a, b in zip(packed_grads, separate_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_packing_adds_whole_texts_while_they_fit(tokenizer):
    image = torch.zeros(3, 32, 32)
    lengths = [len(encode_example(tokenizer, image, q, t, 40).input_ids) for q, t in TEXTS]
    example = encode_packed(tokenizer, image, TEXTS, 40, max_packed_len=lengths[0] + lengths[1] + lengths[2] - 1)
    assert example.segment_ids.tolist() == [0] * lengths[0] + [1] * lengths[1]
    # The first text always goes in, even alone over the limit.
    assert len(encode_packed(tokenizer, image, TEXTS, 40, max_packed_len=1).input_ids) == lengths[0]


def test_groups_hold_every_caption_and_question_of_an_image():
    captions, questions = ShapesDataset("val", num_images=5), ShapesDataset("val", num_images=5, task="vqa")
    parts, weights = group_by_image([captions, questions, ColourSamples(3)], [1.0, 2.0, 1.0])
    assert weights == [3.0, 1.0]  # the built-in set's two parts merge: same images
    assert group_by_image([captions, questions], None)[1] is None
    scenes, colours = parts
    assert len(scenes) == 5 and len(colours) == 3
    assert sum(len(scenes[i]) for i in range(5)) == len(captions) + len(questions)
    for index in range(5):
        group = scenes[index]
        assert {sample.image_id for sample in group} == {f"val-{index}"}
        assert sum(sample.question is None for sample in group) == 1  # its one training caption


def test_only_the_named_sources_are_packed_and_the_others_keep_their_place_and_weight():
    captions, questions = ShapesDataset("val", num_images=5), ShapesDataset("val", num_images=5, task="vqa")
    colours = ColourSamples(3, both_tasks=True)
    parts, weights = group_by_image([captions, colours, questions], [1.0, 4.0, 2.0], sources=["colours"])
    assert weights == [1.0, 4.0, 2.0]  # nothing merged: each part keeps its weight, in its place
    assert parts[0] is captions and parts[2] is questions
    assert len(parts[1]) == 3 and all(len(parts[1][i]) == 2 for i in range(3))  # a caption and a question each
    with pytest.raises(ValueError, match="cannot pack easy_vqa: the training data's sources are shapes, colours"):
        group_by_image([captions, colours], None, sources=["easy_vqa"])


def test_packed_examples_are_reproducible_from_their_seed():
    questions = ShapesDataset("val", num_images=2, task="vqa")
    groups = ImageGroups([questions])
    tokenizer = Tokenizer.build(questions.texts())
    dataset = TokenizedDataset(groups, tokenizer, build_transform(64, train=True), 40, max_packed_len=200)
    first, again, other_seed = dataset[(0, 7)], dataset[(0, 7)], dataset[(0, 8)]
    assert torch.equal(first.input_ids, again.input_ids) and torch.equal(first.image, again.image)
    assert int(first.segment_ids.max()) + 1 == len(groups[0])  # every question fits in 200 tokens
    assert not torch.equal(first.input_ids, other_seed.input_ids)  # another draw, another order


def test_a_proportional_draw_gives_each_index_its_weights_share_and_never_one_twice():
    torch.manual_seed(0)
    weights = torch.tensor([3.0, 1.0, 1.0, 1.0, 2.0])
    counts = torch.zeros(5)
    for _ in range(4000):
        drawn = draw_in_proportion(weights, 2)
        assert len(drawn) == 2 and len(set(drawn)) == 2
        counts[drawn] += 1
    assert torch.allclose(counts / counts.sum(), weights / weights.sum(), atol=0.02)


def test_a_draw_among_zero_weights_takes_them_alike():
    torch.manual_seed(0)
    assert all(len(set(draw_in_proportion(torch.zeros(3), 2))) == 2 for _ in range(50))


def test_an_index_whose_share_needs_more_than_one_draw_is_drawn_once_every_time():
    torch.manual_seed(0)
    weights = torch.tensor([6.0, 1.0, 1.0])  # three quarters of two draws: 1.5 of them, capped at one
    draws = [draw_in_proportion(weights, 2) for _ in range(2000)]
    assert all(0 in drawn for drawn in draws)
    assert 1.45 < sum(len(drawn) for drawn in draws) / len(draws) < 1.55  # it, and each other a quarter of the time


class CountingLoads(torch.utils.data.Dataset):
    """A data set that counts the samples loaded from it."""

    def __init__(self, samples):
        self.samples, self.loads = samples, 0

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        self.loads += 1
        return self.samples[index]

    def sample_image_ids(self):
        return [sample.image_id for sample in self.samples]


def test_groups_of_a_few_texts_keep_each_data_sets_share_of_the_mixture_and_load_only_those():
    captions = CountingLoads(ShapesDataset("val", num_images=4))  # one caption a scene
    questions = CountingLoads(ShapesDataset("val", num_images=4, task="vqa"))  # several questions a scene
    (scenes,), weights = group_by_image([captions, questions], [1.0, 3.0], texts_per_item=2)
    assert weights == [4.0]  # the group's weight is its parts' together
    captions.loads = questions.loads = 0  # grouping looked at a sample of each part
    torch.manual_seed(0)
    drawn = [scenes[index % 4] for index in range(800)]
    assert captions.loads + questions.loads == 1600  # only the drawn texts were loaded
    for index, group in enumerate(drawn):
        assert len(group) == 2 and {sample.image_id for sample in group} == {f"val-{index % 4}"}
        assert len({(sample.question, sample.target) for sample in group}) == 2
    caption_share = sum(sample.question is None for group in drawn for sample in group) / 1600
    assert caption_share == pytest.approx(0.25, abs=0.03)  # its weight's share, as unpacked


def test_packed_texts_per_row_need_packing_on():
    from vlm.training.loop import TrainConfig

    with pytest.raises(ValueError, match="packed_texts need packing on"):
        TrainConfig(packed_texts=2)
    with pytest.raises(ValueError, match="packed_texts must be 0"):
        TrainConfig(packed_text_len=96, packed_texts=-1)
