import pytest
import torch
from helpers import tiny_model, tiny_tokenizer
from PIL import Image

from vlm.inference.attention_maps import AttendedText, combine_layers, save_attention_figure, token_attention_maps
from vlm.inference.generate import GenerationConfig, generate
from vlm.inference.predict import Predictor


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tokenizer()
    return tiny_model(tokenizer, seed=1), tokenizer


def test_explicit_attention_gives_the_same_hidden_states_as_the_fused_kernel(setup):
    model, tokenizer = setup
    image_tokens = model.encode_images(torch.randn(2, 3, 32, 32))
    input_ids = torch.tensor([tokenizer.question_prompt("what color is the circle?")] * 2)
    weights: list[torch.Tensor] = []
    with torch.no_grad():
        fused = model.text_hidden_states(image_tokens, input_ids)
        explicit = model.text_hidden_states(image_tokens, input_ids, attention_weights=weights)
    slots = model.num_image_tokens + input_ids.shape[1]
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert len(weights) == model.config.decoder.depth
    assert weights[0].shape == (2, model.config.decoder.heads, slots, slots)
    assert torch.allclose(weights[0].sum(dim=-1), torch.ones(2, model.config.decoder.heads, slots))
    # Text is causal: the first text slot sees nothing after it.
    assert float(weights[0][:, :, model.num_image_tokens, model.num_image_tokens + 1 :].abs().sum()) == 0.0


@pytest.mark.parametrize("method", ["mean", "rollout"])
def test_one_map_per_generated_token_each_summing_to_one_over_the_image(setup, method):
    model, tokenizer = setup
    image = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompt = tokenizer.caption_prompt()
    [generated] = generate(
        model, image[None], [prompt], tokenizer.eos_id, tokenizer.pad_id, GenerationConfig(max_new_tokens=7)
    )
    maps = token_attention_maps(model, image, prompt, generated, method)
    side = model.config.vision.grid_size // model.config.projector.reduction
    assert len(generated) > 0 and maps.shape == (len(generated), side, side)
    assert torch.allclose(maps.sum(dim=(1, 2)), torch.ones(len(generated)))
    assert bool((maps >= 0).all())


def test_no_generated_tokens_give_no_maps(setup):
    model, tokenizer = setup
    assert token_attention_maps(model, torch.zeros(3, 32, 32), tokenizer.caption_prompt(), []).shape == (0, 2, 2)


def test_rollout_credits_a_slot_read_through_another_where_the_mean_does_not():
    # Layer 1: slot 1 reads slot 0; layer 2: slot 2 reads slot 1. Every other slot reads itself.
    first = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    second = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    heads = [first[None].repeat(2, 1, 1), second[None].repeat(2, 1, 1)]
    mean = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])  # slot 2 draws nothing from slot 0
    assert torch.allclose(combine_layers(heads, "mean"), mean)
    # (0.5 second + 0.5 I) @ (0.5 first + 0.5 I): slot 2 gives half its weight to slot 1, which gave half of its own
    # to slot 0, so slot 2 credits slot 0 with 1/4.
    rollout = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]])
    assert torch.allclose(combine_layers(heads, "rollout"), rollout)
    with pytest.raises(ValueError, match="attention method"):
        combine_layers(heads, "max")


@pytest.mark.parametrize("method", ["mean", "rollout"])
def test_each_map_is_read_from_the_slot_that_predicted_its_token(setup, monkeypatch, method):
    # Planted weights, in every layer and head: the slot that predicts generated token j (the last prompt slot for
    # j = 0) attends to image token looks_at[j] alone, every other slot to itself.
    model, tokenizer = setup
    prompt, generated = tokenizer.caption_prompt(), tokenizer.encode("red blue green")[:3]
    looks_at = [3, 0, 2]  # on the 2 x 2 grid, row-major: (1, 1), (0, 0), (1, 0)
    num_image = model.num_image_tokens
    text_hidden_states = model.text_hidden_states

    def planted(image_tokens, input_ids, attention_mask=None, attention_weights=None, segment_ids=None):
        hidden = text_hidden_states(image_tokens, input_ids, attention_mask, attention_weights, segment_ids)
        weights = torch.eye(num_image + input_ids.shape[1])  # (S, S)
        for j, image_token in enumerate(looks_at):
            predicting = num_image + len(prompt) - 1 + j
            weights[predicting] = torch.nn.functional.one_hot(torch.tensor(image_token), len(weights))
        attention_weights[:] = [weights.expand_as(layer).clone() for layer in attention_weights]  # (1, H, S, S)
        return hidden

    monkeypatch.setattr(model, "text_hidden_states", planted)
    maps = token_attention_maps(model, torch.zeros(3, 32, 32), prompt, generated, method)
    expected = torch.zeros(3, 4)
    expected[range(3), looks_at] = 1.0
    assert torch.allclose(maps, expected.view(3, 2, 2))


def test_predictor_attend_returns_the_caption_it_would_write_and_its_maps(setup, tmp_path):
    model, tokenizer = setup
    predictor = Predictor(model, tokenizer)
    images = [Image.new("RGB", (40, 32), "red"), Image.new("RGB", (32, 32), "blue")]
    config = GenerationConfig(max_new_tokens=6)
    attended = predictor.attend(images, [None, "what color is it?"], config=config)
    assert attended[0].text == predictor.caption(images[:1], config)[0]
    assert attended[1].text == predictor.answer(images[1:], ["what color is it?"], config=config)[0]
    for item in attended:
        assert len(item.tokens) == item.maps.shape[0] and "".join(item.tokens).strip() == item.text
    save_attention_figure(tmp_path / "maps.png", images, attended, ["caption", "question"])
    assert Image.open(tmp_path / "maps.png").size[0] > 100


def test_figure_of_an_empty_answer_has_only_the_image(tmp_path):
    empty = AttendedText(text="", tokens=[], maps=torch.zeros(0, 2, 2))
    save_attention_figure(tmp_path / "empty.png", [Image.new("RGB", (8, 8))], [empty], ["nothing"])
    assert (tmp_path / "empty.png").is_file()


@pytest.mark.parametrize("num_queries, num_keys", [(5, 5), (2, 6)])
def test_explicit_attention_without_a_mask_is_causal_as_the_fused_kernel_is(num_queries, num_keys):
    """mask None means causal with the queries as the last slots (a cached step's new tokens): the weights times the
    values equal the fused kernel's output under that mask, and nothing after a query is weighted."""
    import torch.nn.functional as F

    from vlm.model.decoder import causal_mask, explicit_attention

    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, num_queries, 8, generator=generator)
    k, v = (torch.randn(2, 3, num_keys, 8, generator=generator) for _ in range(2))
    weights = explicit_attention(q, k, None)
    mask = causal_mask(num_queries, num_keys, q.device)
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(weights @ v, fused, atol=1e-5)
    assert torch.equal(weights == 0, ~mask.expand_as(weights))  # exactly the masked slots are zero
    assert torch.equal(mask, torch.ones(num_queries, num_keys).tril(num_keys - num_queries).bool())


def test_explicit_attention_weights_keep_the_dtype_of_their_queries():
    # Under bfloat16 autocast the maps multiply bfloat16 values: float32 weights would not mix with them.
    from vlm.model.decoder import explicit_attention

    q, k = torch.randn(1, 2, 3, 8, dtype=torch.bfloat16), torch.randn(1, 2, 3, 8, dtype=torch.bfloat16)
    weights = explicit_attention(q, k, None)
    assert weights.dtype == torch.bfloat16 and torch.allclose(weights.float().sum(-1), torch.ones(1, 2, 3), atol=1e-2)
