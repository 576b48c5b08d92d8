import pytest
import torch
from helpers import tiny_model, tiny_tokenizer

from vlm.evaluation.metrics.cider import document_frequencies
from vlm.inference.generate import GenerationConfig, generate
from vlm.posttrain.reward import RewardModel
from vlm.posttrain.scst import (
    CiderReward,
    RewardModelReward,
    SCSTConfig,
    finetune,
    scst_loss,
    scst_step,
    sequence_log_probs,
)
from vlm.training.loop import TrainConfig, finetune_config


def test_scst_loss_pushes_up_samples_above_the_baseline_and_down_those_below():
    log_probs = torch.tensor([-2.0, -3.0, -1.0], requires_grad=True)
    rewards, baselines = torch.tensor([1.0, 0.2, 0.5]), torch.tensor([0.5, 0.5, 0.5])
    loss = scst_loss(log_probs, rewards, baselines)
    assert float(loss.detach()) == pytest.approx(-(0.5 * -2.0 + -0.3 * -3.0 + 0.0) / 3)
    loss.backward()
    # Gradient descent moves log p against the gradient: up for the better sample, down for the worse, and a
    # sample that only equals the greedy caption gets no push at all.
    assert log_probs.grad.tolist() == pytest.approx([-0.5 / 3, 0.3 / 3, 0.0])


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tokenizer()
    return tiny_model(tokenizer, seed=5), tokenizer


def test_sequence_log_probs_equal_the_teacher_forced_log_probabilities(setup):
    model, tokenizer = setup
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompt = tokenizer.caption_prompt()
    texts = [tokenizer.encode("a red circle"), tokenizer.encode("two blue squares")]
    got = sequence_log_probs(
        model, model.encode_images(images), [prompt] * 2, texts, [True, False], tokenizer.eos_id, tokenizer.pad_id
    )
    for row, (text, ended) in enumerate(zip(texts, [True, False])):
        ids = prompt + text + ([tokenizer.eos_id] if ended else [])
        with torch.no_grad():
            logits = model.logits(images[row : row + 1], torch.tensor([ids]))[0].log_softmax(dim=-1)
        expected = sum(float(logits[t, ids[t + 1]]) for t in range(len(prompt) - 1, len(ids) - 1))
        assert float(got[row].detach()) == pytest.approx(expected, abs=1e-4)


def test_the_baseline_is_the_greedy_captions_reward(setup):
    model, tokenizer = setup
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    config = SCSTConfig(samples_per_image=4, max_new_tokens=5, temperature=2.0)

    def length_reward(images, texts, references):
        return torch.tensor([float(len(t)) for t in texts])

    loss, stats = scst_step(model, tokenizer, images, [["x"]] * 3, length_reward, config, seed=0)
    prompts = [tokenizer.caption_prompt()] * 3
    greedy = generate(model, images, prompts, tokenizer.eos_id, tokenizer.pad_id, GenerationConfig(max_new_tokens=5))
    assert stats["greedy_reward"] == pytest.approx(sum(map(len, greedy)) / 3)
    assert loss.requires_grad

    def constant_reward(images, texts, references):
        return torch.ones(len(texts))

    loss, stats = scst_step(model, tokenizer, images, [["x"]] * 3, constant_reward, config, seed=0)
    assert float(loss.detach()) == 0.0 and stats["better_than_greedy"] == 0.0


def test_cider_reward_prefers_the_reference_and_reward_model_reward_scores_each_caption(setup):
    model, tokenizer = setup
    references = [["a red circle"], ["two blue squares above a green star"], ["a green star"]]
    texts = [tokenizer.encode(t) for t in ["a red circle", "a red circle", "two blue squares"]]
    rewards = CiderReward(tokenizer)(torch.zeros(3, 3, 32, 32), texts, references)
    assert rewards.shape == (3,) and rewards[0] > rewards[1] and rewards[0] > rewards[2]
    corpus = document_frequencies({i: refs for i, refs in enumerate(references * 3)})
    assert CiderReward(tokenizer, corpus)(torch.zeros(1, 3, 32, 32), texts[:1], references[:1])[0] > 1.0
    scores = RewardModelReward(RewardModel(model), tokenizer)(torch.zeros(3, 3, 32, 32), texts, references)
    assert scores.shape == (3,)


def test_finetune_runs_steps_and_reports_rewards(setup):
    model, tokenizer = setup
    start = {name: value.clone() for name, value in model.state_dict().items()}
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    references = [["a red circle"], ["two blue squares"]]
    history = finetune(
        model,
        tokenizer,
        lambda step: (images, references),
        CiderReward(tokenizer),
        SCSTConfig(samples_per_image=2, max_new_tokens=4),
        TrainConfig(max_steps=2, warmup_steps=1, dtype="float32", lr_decoder=1e-4),
    )
    assert [h["step"] for h in history] == [1, 2]
    assert set(history[0]) == {"step", "loss", "sample_reward", "greedy_reward", "better_than_greedy"}
    assert not model.training
    assert any(not torch.equal(start[name], value) for name, value in model.state_dict().items())


@pytest.mark.parametrize("favoured", [0, 1])
def test_finetune_makes_the_captions_the_reward_favours_more_likely(favoured):
    """A reward of 1 for a caption whose first token id is even (or odd): after 20 steps the model puts more of
    its first token's probability on the favoured half of the vocabulary than it did at the start."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=1)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    prompts = torch.tensor([tokenizer.caption_prompt()] * 4)

    def favoured_share() -> float:
        with torch.no_grad():
            first_token = model.logits(images, prompts)[:, -1].float().softmax(dim=-1)  # (4, V)
        return float(first_token[:, favoured::2].sum(dim=-1).mean())

    def parity_reward(images, texts, references):
        return torch.tensor([float(len(t) > 0 and t[0] % 2 == favoured) for t in texts])

    before = favoured_share()
    finetune(
        model,
        tokenizer,
        lambda step: (images, [["x"]] * 4),
        parity_reward,
        SCSTConfig(samples_per_image=4, max_new_tokens=1),
        finetune_config(1e-2, max_steps=20, warmup_steps=1, dtype="float32"),
    )
    assert favoured_share() > before + 0.03


def test_captions_are_cut_to_fit_the_context_with_their_end_token(setup):
    model, tokenizer = setup
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    config = SCSTConfig(samples_per_image=2, max_new_tokens=500)

    def length_reward(images, texts, references):
        assert all(len(t) <= model.config.max_text_len - 3 for t in texts)
        return torch.tensor([float(len(t)) for t in texts])

    loss, _ = scst_step(model, tokenizer, images, [["x"]] * 2, length_reward, config, seed=0)
    assert torch.isfinite(loss)
