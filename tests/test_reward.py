import pytest
import torch
from helpers import ColourSamples, tiny_model, tiny_tokenizer
from PIL import Image

from vlm.data.catalog import texts_of
from vlm.data.transforms import build_transform
from vlm.inference.generate import GenerationConfig
from vlm.inference.predict import Predictor
from vlm.model.checkpoint import CheckpointError, save_model
from vlm.model.tokenizer import Tokenizer
from vlm.posttrain.preferences import caption_pairs
from vlm.posttrain.reward import (
    RewardModel,
    bradley_terry_loss,
    load_reward_model,
    pair_batch,
    pairwise_accuracy,
    save_reward_model,
    train_reward_model,
)
from vlm.training.loop import TrainConfig


def test_reward_head_gives_one_score_per_row_read_at_the_end_token():
    tokenizer = tiny_tokenizer()
    model = RewardModel(tiny_model(tokenizer))
    torch.nn.init.normal_(model.head.weight)
    images = torch.randn(3, 3, 32, 32)
    texts = [tokenizer.encode(t) for t in ["a red circle", "red", "two blue squares above a green star"]]
    prompts = [tokenizer.caption_prompt()] * 3
    scores = model.score(images, prompts, texts, tokenizer.eos_id, tokenizer.pad_id)
    assert scores.shape == (3,)
    # left padding does not change a row's score: row 1 alone equals row 1 in the batch
    alone = model.score(images[1:2], prompts[1:2], texts[1:2], tokenizer.eos_id, tokenizer.pad_id)
    assert torch.allclose(alone, scores[1:2], atol=1e-5)


def test_bradley_terry_loss():
    assert float(bradley_terry_loss(torch.zeros(4), torch.zeros(4))) == pytest.approx(0.6931, abs=1e-4)
    assert float(bradley_terry_loss(torch.tensor([5.0]), torch.tensor([-5.0]))) < 1e-4
    assert float(bradley_terry_loss(torch.tensor([-5.0]), torch.tensor([5.0]))) == pytest.approx(10.0, abs=1e-3)


@pytest.fixture(scope="module")
def colour_pairs():
    samples = ColourSamples(32, seed=0).samples
    captions = [s for s in samples if s.question is None]  # "a red picture" ...
    tokenizer = Tokenizer.build(texts_of(ColourSamples(32)) + ["a green picture", "a yellow picture"])
    return tokenizer, caption_pairs(captions, seed=0, kinds=["colour"])


def test_reward_loss_falls_and_it_learns_which_colour_is_true(colour_pairs, tmp_path):
    tokenizer, pairs = colour_pairs
    model = RewardModel(tiny_model(tokenizer))
    transform = build_transform(32)
    config = TrainConfig(
        max_steps=40, batch_size=8, warmup_steps=2, lr_decoder=3e-3, lr_projector=3e-3, lr_encoder=3e-3
    )
    losses = train_reward_model(model, pairs, tokenizer, transform, config)
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # the head starts at zero: indifferent
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
    accuracy = pairwise_accuracy(model, pairs, tokenizer, transform, batch_size=16)
    assert set(accuracy) == {"colour", "all"} and accuracy["all"] > 0.8

    save_reward_model(tmp_path / "reward", model, tokenizer)
    loaded, _ = load_reward_model(tmp_path / "reward")
    images, ids, mask = pair_batch(pairs[:4], tokenizer, transform, model.backbone.config.max_text_len)
    with torch.no_grad():
        assert torch.allclose(loaded(images, ids, mask), model(images, ids, mask), atol=1e-5)


def test_a_model_folder_without_a_head_is_not_a_reward_model(tmp_path):
    tokenizer = tiny_tokenizer()
    save_model(tmp_path, tiny_model(tokenizer), tokenizer)
    with pytest.raises(CheckpointError, match="reward_head.safetensors: missing"):
        load_reward_model(tmp_path)


class FavoursHighIds(RewardModel):
    """A stand-in reward: the sum of the token ids (padding is id 0), so the candidate with the largest sum wins."""

    def forward(self, images, sequences, attention_mask):
        return (sequences * attention_mask).sum(dim=1).float()


def test_best_of_n_keeps_the_candidate_the_reward_model_scores_highest():
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=4)
    images = [Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")]
    config = GenerationConfig(max_new_tokens=6, temperature=3.0, seed=0)
    plain = Predictor(model, tokenizer)
    reranked = Predictor(model, tokenizer, scorer=FavoursHighIds(model).scorer(tokenizer), rerank=4)
    batch = plain.image_batch(images)
    prompts = [tokenizer.caption_prompt()] * 2
    first = plain.generate_ids(batch, prompts, [0, 1], config)
    samples = plain.generate_ids(
        batch, prompts * 3, [0, 1] * 3, GenerationConfig(max_new_tokens=6, temperature=3.0, seed=1, strategy="sample")
    )
    best = reranked.generate_ids(batch, prompts, [0, 1], config)
    for row in range(2):
        candidates = [first[row]] + samples[row::2]
        assert len({sum(c) for c in candidates}) > 1
        assert best[row] in candidates and sum(best[row]) == max(sum(c) for c in candidates)
    with pytest.raises(ValueError, match="needs a reward model"):
        Predictor(model, tokenizer, rerank=2)
