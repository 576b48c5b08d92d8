import pytest
import torch
from helpers import tiny_model, tiny_tokenizer

from vlm.experiments.benchmarks import benchmark_generation, format_timings
from vlm.inference.generate import GenerationConfig, generate

QUESTIONS = ["what color is the circle?", "two blue squares above a green star?", "red?"]


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=3)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = [tokenizer.caption_prompt()] + [tokenizer.question_prompt(q) for q in QUESTIONS[:2]]
    return model, tokenizer, images, prompts


def run(setup, config, images=None, prompts=None, image_index=None):
    model, tokenizer, default_images, default_prompts = setup
    return generate(
        model,
        default_images if images is None else images,
        default_prompts if prompts is None else prompts,
        tokenizer.eos_id,
        tokenizer.pad_id,
        config,
        image_index=image_index,
    )


def test_greedy_with_cache_equals_greedy_without(setup):
    with_cache = run(setup, GenerationConfig(max_new_tokens=20))
    without = run(setup, GenerationConfig(max_new_tokens=20, use_cache=False))
    assert with_cache == without and all(len(row) > 0 for row in with_cache)


def test_a_compiled_decoder_generates_what_the_eager_one_does():
    tokenizer = tiny_tokenizer()
    eager, compiled = tiny_model(tokenizer, seed=3), tiny_model(tokenizer, seed=3)
    compiled.decoder.compile_features()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = [tokenizer.caption_prompt(), tokenizer.question_prompt(QUESTIONS[0])]  # of different lengths
    config = GenerationConfig(max_new_tokens=8, min_new_tokens=8)
    expected = generate(eager, images, prompts, tokenizer.eos_id, tokenizer.pad_id, config)
    assert generate(compiled, images, prompts, tokenizer.eos_id, tokenizer.pad_id, config) == expected


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_batched_generation_equals_one_by_one(setup, strategy):
    model, tokenizer, images, prompts = setup
    config = GenerationConfig(max_new_tokens=12, strategy=strategy, num_beams=3)
    batched = run(setup, config)
    for row, prompt in enumerate(prompts):
        assert run(setup, config, images[row : row + 1], [prompt]) == [batched[row]]


def test_beam_search_with_width_one_equals_greedy(setup):
    greedy = run(setup, GenerationConfig(max_new_tokens=15))
    for penalty in (0.0, 1.0, 2.0):
        assert (
            run(setup, GenerationConfig(max_new_tokens=15, strategy="beam", num_beams=1, length_penalty=penalty))
            == greedy
        )


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(setup):
    model, tokenizer, images, prompts = setup

    def log_probability(row, tokens):
        ids = torch.tensor([prompts[row] + tokens + [tokenizer.eos_id]])
        logits = model.logits(images[row : row + 1], ids).log_softmax(-1)[0]
        start = len(prompts[row]) - 1
        return sum(logits[start + i, t].item() for i, t in enumerate(tokens + [tokenizer.eos_id]))

    config = GenerationConfig(max_new_tokens=6, strategy="beam", num_beams=4, length_penalty=0.0)
    greedy, beam = run(setup, GenerationConfig(max_new_tokens=6)), run(setup, config)
    for row in range(len(prompts)):
        if len(greedy[row]) < 6 and len(beam[row]) < 6:  # both ended with the end token within the budget
            assert log_probability(row, beam[row]) >= log_probability(row, greedy[row]) - 1e-4


def test_sampling_is_reproducible_with_a_seed(setup):
    config = GenerationConfig(max_new_tokens=10, strategy="sample", temperature=1.5, seed=7)
    first, second = run(setup, config), run(setup, config)
    assert first == second
    others = [
        run(setup, GenerationConfig(max_new_tokens=10, strategy="sample", temperature=1.5, seed=s))
        for s in range(8, 12)
    ]
    assert any(other != first for other in others)
    top_1 = GenerationConfig(max_new_tokens=10, strategy="sample", top_k=1, seed=3)
    assert run(setup, top_1) == run(setup, GenerationConfig(max_new_tokens=10))
    global_rng = torch.get_rng_state()
    run(setup, GenerationConfig(max_new_tokens=3, strategy="sample"))  # no seed: must not touch the global RNG
    assert torch.equal(torch.get_rng_state(), global_rng)
    tiny_nucleus = GenerationConfig(max_new_tokens=10, strategy="sample", top_p=1e-6, seed=3)
    assert run(setup, tiny_nucleus) == run(setup, GenerationConfig(max_new_tokens=10))


def test_each_new_token_costs_one_position_and_the_image_is_encoded_once(setup, monkeypatch):
    model, tokenizer, images, _ = setup
    fed, encoded = [], []
    forward_features, step, encode_images = model.decoder.forward_features, model.decoder.step, model.encode_images
    monkeypatch.setattr(
        model.decoder, "forward_features", lambda e, *a, **k: fed.append(e.shape[1]) or forward_features(e, *a, **k)
    )
    # A decoding step feeds (B,) token ids: one position per row.
    monkeypatch.setattr(model.decoder, "step", lambda ids, *a: fed.append(ids.numel() // len(prompts)) or step(ids, *a))
    monkeypatch.setattr(model, "encode_images", lambda x: encoded.append(len(x)) or encode_images(x))
    prompts = [tokenizer.question_prompt(q) for q in QUESTIONS]
    config = GenerationConfig(max_new_tokens=8, min_new_tokens=8)
    outputs = generate(model, images[:1], prompts, tokenizer.eos_id, tokenizer.pad_id, config, image_index=[0, 0, 0])
    assert encoded == [1]  # one image for three questions
    assert fed[1:] == [1] * 7 and all(len(row) == 8 for row in outputs)  # prefill, then one position per token


def test_min_new_tokens_and_bad_arguments(setup):
    outputs = run(setup, GenerationConfig(max_new_tokens=5, min_new_tokens=5))
    assert all(len(row) == 5 for row in outputs)
    with pytest.raises(ValueError, match="strategy must be greedy, beam or sample"):
        run(setup, GenerationConfig(strategy="nucleus"))
    with pytest.raises(ValueError, match="3 prompts need an image each"):
        run(setup, GenerationConfig(), image_index=[0, 1, 5])


def test_bfloat16_autocast_generates_and_no_prompts_give_no_outputs(setup):
    model, tokenizer, images, prompts = setup
    config = GenerationConfig(max_new_tokens=4, min_new_tokens=4)
    outputs = generate(
        model, images, prompts, tokenizer.eos_id, tokenizer.pad_id, config, autocast_dtype=torch.bfloat16
    )
    assert [len(row) for row in outputs] == [4] * len(prompts)
    assert generate(model, images, [], tokenizer.eos_id, tokenizer.pad_id, config) == []


def test_generation_benchmark_times_both_paths():
    timings = benchmark_generation("tiny", batch_sizes=[2], new_tokens=4, repeats=1)
    assert [(t.batch_size, t.dtype, t.new_tokens) for t in timings] == [(2, "float32", 4)]
    assert timings[0].ms_cache > 0 and timings[0].ms_no_cache > 0
    assert "cache speedup" in format_timings(timings)
    with pytest.raises(ValueError, match="100 new tokens need 106 positions, but preset 'tiny' has"):
        benchmark_generation("tiny", new_tokens=100)
