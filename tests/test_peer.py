"""vlm/experiments/peer.py: the Hugging Face peer is matched in size, trains on our batches and generates with our ids."""

import pytest
import torch
import torch.nn.functional as F
from helpers import ColourSamples, text_batch, tiny_tokenizer

from vlm.evaluation.evaluate import evaluate
from vlm.experiments.benchmarks import generation_timings, optimizer_step
from vlm.experiments.peer import PeerModel, PeerPredictor, build_peer_optimizer, parameter_count, peer_generate
from vlm.inference.generate import GenerationConfig
from vlm.model.config import get_preset
from vlm.model.vision_language_model import VisionLanguageModel
from vlm.training.loop import TrainConfig

PAIRS = [(None, "a red circle"), ("what color is the circle?", "red"), (None, "two blue squares above a green star")]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def build(tokenizer, preset: str = "tiny") -> PeerModel:
    config = get_preset(preset)
    config.decoder.vocab_size = tokenizer.vocab_size
    torch.manual_seed(0)
    return PeerModel(config, tokenizer)


@pytest.mark.parametrize("preset", ["tiny", "scale-l"])
def test_the_peer_has_as_many_parameters_as_our_model(tokenizer, preset):
    peer = build(tokenizer, preset)
    ours = parameter_count(VisionLanguageModel(peer.config))
    assert parameter_count(peer) == pytest.approx(ours, rel=0.01)
    # Same ViT and GPT-2 shape; cross-attention and the untied output layer are paid for by a narrower MLP.
    assert peer.hf.decoder.config.n_layer == peer.config.decoder.depth
    assert peer.mlp_width < 4 * peer.config.decoder.width


def test_a_peer_whose_mlp_cannot_pay_for_cross_attention_keeps_our_mlp_width(tokenizer):
    peer = build(tokenizer, "default")  # its decoder's MLP is as wide as the stream
    assert peer.config.decoder.mlp_ratio == 1.0
    assert peer.mlp_width == peer.config.decoder.width
    assert parameter_count(peer) > parameter_count(VisionLanguageModel(peer.config))


def test_the_peer_loss_covers_target_tokens_only(tokenizer):
    peer = build(tokenizer)
    batch = text_batch(tokenizer, peer.config, PAIRS)
    loss = peer(**batch)
    ids = batch["input_ids"]
    logits = peer.hf(
        pixel_values=batch["images"],
        decoder_input_ids=ids[:, :-1],
        decoder_attention_mask=batch["attention_mask"][:, :-1].long(),
    ).logits  # (B, T - 1, V): position t predicts token t + 1
    is_target = (batch["target_mask"] & batch["attention_mask"])[:, 1:]
    torch.testing.assert_close(loss, F.cross_entropy(logits[is_target], ids[:, 1:][is_target]))
    changed = dict(batch, input_ids=ids.clone())
    changed["input_ids"][1, 3] = (ids[1, 3] + 1) % tokenizer.num_tokens  # a question token: never a target
    assert not batch["target_mask"][1, 3]
    assert not torch.allclose(peer(**changed), loss)  # it is read, as context


def test_the_peer_trains_a_step_on_a_collated_batch(tokenizer):
    peer = build(tokenizer)
    batch = text_batch(tokenizer, peer.config, PAIRS)
    optimizer = build_peer_optimizer(peer, TrainConfig())
    before = [p.detach().clone() for p in peer.parameters()]
    loss = optimizer_step(peer, optimizer, batch)
    assert torch.isfinite(loss)
    assert all(not torch.equal(b, p) for b, p in zip(before, peer.parameters()) if p.dim() >= 2)
    assert float(peer(**batch).detach()) < float(loss)


def always_end(peer: PeerModel, tokenizer, runner_up: int) -> None:
    """Weights that make every position prefer the end token, then `runner_up`."""
    with torch.no_grad():
        direction = torch.ones(peer.config.decoder.width)
        peer.hf.decoder.transformer.ln_f.weight.zero_()
        peer.hf.decoder.transformer.ln_f.bias.copy_(direction)
        peer.hf.decoder.lm_head.weight.zero_()
        peer.hf.decoder.lm_head.weight[tokenizer.eos_id] = direction
        peer.hf.decoder.lm_head.weight[runner_up] = direction / 2


def test_the_peer_generates_with_our_prompts_and_stops_at_our_end_token(tokenizer):
    peer = build(tokenizer).eval()
    always_end(peer, tokenizer, runner_up=7)
    images = torch.randn(2, 3, 32, 32)
    prompts = [tokenizer.caption_prompt(), tokenizer.question_prompt("what color is it?"), tokenizer.caption_prompt()]
    config = GenerationConfig(max_new_tokens=5)
    assert peer_generate(peer, images, prompts, tokenizer.eos_id, tokenizer.pad_id, config, [0, 1, 1]) == [[]] * 3
    config = GenerationConfig(max_new_tokens=5, min_new_tokens=2)
    assert peer_generate(peer, images, prompts, tokenizer.eos_id, tokenizer.pad_id, config, [0, 1, 1]) == [[7, 7]] * 3


def test_rows_of_different_prompt_lengths_get_their_own_image(tokenizer):
    peer = build(tokenizer).eval()
    images = torch.randn(2, 3, 32, 32)
    prompts = [tokenizer.caption_prompt(), tokenizer.question_prompt("what color is it?")]
    config = GenerationConfig(max_new_tokens=4, min_new_tokens=4)
    together = peer.generate_ids(images, prompts, config, image_index=[1, 0])
    alone = [peer.generate_ids(images[[i]], [p], config) for i, p in zip([1, 0], prompts)]
    assert together == [row for [row] in alone]


def test_the_peer_is_timed_and_scored_by_the_project_functions(tokenizer):
    peer = build(tokenizer)
    [timing] = generation_timings(peer, tokenizer, [2], new_tokens=3, repeats=1, generate_fn=peer_generate)
    assert timing.ms_cache > 0 and timing.ms_no_cache > 0
    metrics = evaluate(PeerPredictor(peer, tokenizer), [s for s in ColourSamples(6) if s.question], quiet=True)
    assert metrics["questions"] == 3 and 0 <= metrics["overall"] <= 1
