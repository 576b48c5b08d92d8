import math
from collections.abc import Callable

import pytest
import torch
from helpers import tiny_model, tiny_tokenizer

from vlm.experiments.benchmarks import benchmark_generation, format_timings
from vlm.inference.generate import GenerationConfig, generate, sample_tokens, stream
from vlm.model.vision_language_model import VisionLanguageModel

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


# The tiny random models never pick the end token, so every row runs to max_new_tokens and nothing about stopping
# is tested. `with_scripted_logits` edits a real model's next-token logits, per row, as a known function of the
# row's prompt and the tokens generated so far: generation still runs the model's cache, padding and beam
# reordering, and the edit decides when a row ends (or, for beam search, the whole distribution).
Edit = Callable[[torch.Tensor, tuple[int, ...], tuple[int, ...]], torch.Tensor]


def with_scripted_logits(model: VisionLanguageModel, edit: Edit) -> VisionLanguageModel:
    """`model`, whose `prefill` and `decode_step` (the path generate takes with the cache) return
    `edit(logits (V,), prompt, generated)` for each row. The rows' histories follow `DecodingState.select`."""
    prefill, decode_step = model.prefill, model.decode_step

    def edited(logits: torch.Tensor, state) -> torch.Tensor:
        rows = zip(logits.float(), state.prompts, state.generated, strict=True)
        return torch.stack([edit(row, prompt, tuple(generated)) for row, prompt, generated in rows])

    def scripted_prefill(image_tokens, input_ids, attention_mask, max_new_tokens):
        logits, state = prefill(image_tokens, input_ids, attention_mask, max_new_tokens)
        state.prompts = [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(input_ids, attention_mask)]
        state.generated = [[] for _ in state.prompts]
        select = state.select

        def scripted_select(rows: torch.Tensor) -> None:
            select(rows)
            state.prompts = [state.prompts[r] for r in rows.tolist()]
            state.generated = [list(state.generated[r]) for r in rows.tolist()]

        state.select = scripted_select
        return edited(logits, state), state

    def scripted_decode_step(token_ids, state):
        logits = decode_step(token_ids, state)
        for generated, token in zip(state.generated, token_ids.tolist(), strict=True):
            generated.append(token)
        return edited(logits, state)

    model.prefill, model.decode_step = scripted_prefill, scripted_decode_step
    return model


def ends_after(eos_id: int, steps: dict[tuple[int, ...], int]) -> Edit:
    """The end token is certain once a row has generated `steps[prompt]` tokens, and impossible before (and for
    prompts not in `steps`); the model's own logits choose every other token. A row fed its own end token, as a
    loop that missed it would, goes on writing."""

    def edit(logits: torch.Tensor, prompt: tuple[int, ...], generated: tuple[int, ...]) -> torch.Tensor:
        due = prompt in steps and len(generated) >= steps[prompt] and eos_id not in generated
        logits = logits.clone()
        logits[eos_id] = 100.0 if due else -torch.inf
        return logits

    return edit


@pytest.fixture()
def ending(setup):
    """A fresh model (seed 3, as `setup`'s) where the first question's row ends after 2 tokens, the second's after 4,
    and the caption's row never ends."""
    model, tokenizer, images, prompts = setup
    steps = {tuple(prompts[1]): 2, tuple(prompts[2]): 4}
    model = with_scripted_logits(tiny_model(tokenizer, seed=3), ends_after(tokenizer.eos_id, steps))
    return model, tokenizer, images, prompts


@pytest.mark.parametrize("strategy", ["greedy", "sample"])
def test_greedy_and_sampled_rows_stop_at_their_end_token(ending, strategy):
    config = GenerationConfig(max_new_tokens=8, strategy=strategy, seed=0)
    outputs = run(ending, config)
    assert [len(row) for row in outputs] == [8, 2, 4]
    assert all(ending[1].eos_id not in row for row in outputs)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_generation_stops_once_every_row_has_ended(setup, strategy):
    model, tokenizer, images, prompts = setup
    steps = {tuple(prompt): 1 for prompt in prompts}  # every row (every beam) ends after one token
    model = with_scripted_logits(tiny_model(tokenizer, seed=3), ends_after(tokenizer.eos_id, steps))
    decode_step, calls = model.decode_step, []
    model.decode_step = lambda *args: calls.append(1) or decode_step(*args)
    config = GenerationConfig(max_new_tokens=20, strategy=strategy, num_beams=3)
    assert [len(row) for row in run((model, tokenizer, images, prompts), config)] == [1, 1, 1]
    assert len(calls) == 1  # the first token, then the end tokens: not 19 more steps of finished rows


@pytest.mark.parametrize(
    "setting", [{"temperature": 0.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}, {"max_new_tokens": 0}]
)
def test_each_out_of_range_setting_alone_is_refused(setting):
    with pytest.raises(ValueError):
        GenerationConfig(**setting).validate()


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_min_new_tokens_holds_back_the_end_token(setup, strategy):
    model, tokenizer, images, prompts = setup
    steps = {tuple(prompt): 1 for prompt in prompts}  # every row would end after one token
    model = with_scripted_logits(tiny_model(tokenizer, seed=3), ends_after(tokenizer.eos_id, steps))
    scripted = (model, tokenizer, images, prompts)
    config = GenerationConfig(max_new_tokens=8, strategy=strategy, num_beams=3, seed=0)
    assert [len(row) for row in run(scripted, config)] == [1, 1, 1]
    config.min_new_tokens = 3
    assert [len(row) for row in run(scripted, config)] == [3, 3, 3]


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_stream_yields_what_generate_returns_and_leaves_grad_mode_to_the_caller(ending, strategy):
    model, tokenizer, images, prompts = ending
    config = GenerationConfig(max_new_tokens=7, strategy=strategy, num_beams=3, seed=0)
    for row, prompt in enumerate(prompts):
        streamed = []
        for token in stream(model, images[row : row + 1], prompt, tokenizer.eos_id, tokenizer.pad_id, config):
            assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
            streamed.append(token)
        assert [streamed] == run(ending, config, images[row : row + 1], [prompt])
    assert [len(row) for row in run(ending, config)] == [7, 2, 4]


def test_generate_takes_image_tokens_in_place_of_images(setup):
    model, _, images, _ = setup
    with torch.no_grad():
        image_tokens = model.encode_images(images)
    config = GenerationConfig(max_new_tokens=10)
    assert run(setup, config, images=image_tokens) == run(setup, config)


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
def test_batched_generation_equals_one_by_one(ending, strategy):
    # Rows that end after 2 and 4 tokens beside one that runs to the end: finished rows must neither stop the others
    # nor grow.
    model, tokenizer, images, prompts = ending
    config = GenerationConfig(max_new_tokens=7, strategy=strategy, num_beams=3)
    batched = run(ending, config)
    assert [len(row) for row in batched] == [7, 2, 4]
    for row, prompt in enumerate(prompts):
        assert run(ending, config, images[row : row + 1], [prompt]) == [batched[row]]


def test_beam_search_without_the_cache_equals_beam_search_with_it(setup):
    # Beams are reordered every step: without the cache the recomputed sequences must follow their beams too.
    config = GenerationConfig(max_new_tokens=10, strategy="beam", num_beams=3)
    with_cache = run(setup, config)
    config.use_cache = False
    assert run(setup, config) == with_cache


def test_beam_search_with_width_one_equals_greedy(setup):
    greedy = run(setup, GenerationConfig(max_new_tokens=15))
    for penalty in (0.0, 1.0, 2.0):
        assert (
            run(setup, GenerationConfig(max_new_tokens=15, strategy="beam", num_beams=1, length_penalty=penalty))
            == greedy
        )


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(setup):
    model, tokenizer, images, prompts = setup
    eos = tokenizer.eos_id
    edit = ends_after(eos, {tuple(prompts[0]): 3, tuple(prompts[1]): 4, tuple(prompts[2]): 2})
    scripted = (with_scripted_logits(tiny_model(tokenizer, seed=3), edit), tokenizer, images, prompts)

    def log_probability(row, tokens):
        ids = torch.tensor([prompts[row] + tokens + [eos]])
        logits = model.logits(images[row : row + 1], ids)[0]  # the unedited model's, edited here as generate sees them
        start = len(prompts[row]) - 1
        return sum(
            edit(logits[start + i], tuple(prompts[row]), tuple(tokens[:i])).log_softmax(-1)[token].item()
            for i, token in enumerate(tokens + [eos])
        )

    config = GenerationConfig(max_new_tokens=6, strategy="beam", num_beams=4, length_penalty=0.0)
    greedy, beam = run(scripted, GenerationConfig(max_new_tokens=6)), run(scripted, config)
    assert [len(row) for row in greedy] == [len(row) for row in beam] == [3, 4, 2]  # all ended within the budget
    assert any(b != g for b, g in zip(beam, greedy))  # the beams found something greedy did not
    for row in range(len(prompts)):
        assert log_probability(row, beam[row]) >= log_probability(row, greedy[row]) - 1e-4


def test_beam_search_ranks_finished_hypotheses_by_the_length_penalised_score(setup):
    # A hand-made distribution: "a" (0.6) then the end, or "b" (0.4) then "c" then the end, each certain. Summed,
    # [a] is likelier (log 0.6 > log 0.4); per token (length_penalty 1), [b, c] is (log 0.4 / 2 > log 0.6).
    model, tokenizer, images, prompts = setup
    a, b, c = tokenizer.encode("red blue green")[:3]
    eos = tokenizer.eos_id
    table = {(): {a: 0.6, b: 0.4}, (a,): {eos: 1.0}, (b,): {c: 1.0}, (b, c): {eos: 1.0}}

    def edit(logits: torch.Tensor, prompt: tuple[int, ...], generated: tuple[int, ...]) -> torch.Tensor:
        log_probs = torch.full_like(logits, -torch.inf)
        for token, probability in table.get(generated, {eos: 1.0}).items():  # dead beams are fed the end token
            log_probs[token] = math.log(probability)
        return log_probs

    scripted = (with_scripted_logits(tiny_model(tokenizer, seed=3), edit), tokenizer, images, prompts)

    def beam(length_penalty: float) -> list[list[int]]:
        return run(
            scripted, GenerationConfig(max_new_tokens=5, strategy="beam", num_beams=2, length_penalty=length_penalty)
        )

    assert run(scripted, GenerationConfig(max_new_tokens=5)) == [[a]] * 3
    assert beam(0.0) == [[a]] * 3
    assert beam(1.0) == beam(2.0) == [[b, c]] * 3
    # The penalty is a power of the length: at 0.5, log 0.4 / sqrt(2) = -0.65 < log 0.6 = -0.51, so [a] again.
    assert beam(0.5) == [[a]] * 3


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


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "expected"),
    [
        (1.0, 0, 1.0, [0.5, 0.3, 0.2]),
        (2.0, 0, 1.0, [p**0.5 / (0.5**0.5 + 0.3**0.5 + 0.2**0.5) for p in (0.5, 0.3, 0.2)]),  # softmax(logits / 2)
        (1.0, 2, 1.0, [0.625, 0.375, 0.0]),  # the two likeliest, renormalised
        (1.0, 0, 0.6, [0.625, 0.375, 0.0]),  # 0.5 < 0.6 before the second: kept; 0.8 before the third: dropped
        (1.0, 0, 0.4, [1.0, 0.0, 0.0]),  # the best token alone already reaches 0.4
    ],
)
def test_sampled_tokens_follow_the_tempered_top_k_top_p_probabilities(temperature, top_k, top_p, expected):
    draws = 4000
    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.2)]]).repeat(draws, 1)
    config = GenerationConfig(strategy="sample", temperature=temperature, top_k=top_k, top_p=top_p)
    tokens = sample_tokens(logits, config, torch.Generator().manual_seed(0))
    assert (torch.bincount(tokens, minlength=3) / draws).tolist() == pytest.approx(expected, abs=0.03)


def test_top_k_of_a_single_row_keeps_k_tokens():
    # One prompt is one row: k must be counted over the vocabulary, not the rows.
    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.2)]])
    config, generator = GenerationConfig(strategy="sample", top_k=2), torch.Generator().manual_seed(0)
    assert {int(sample_tokens(logits, config, generator)) for _ in range(200)} == {0, 1}


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
    for image_index in ([0, 1, 5], [0, 1, 3], [0, -1, 1], [0, 1]):  # 3 images: index 3 is one past the end
        with pytest.raises(ValueError, match="3 prompts need an image each"):
            run(setup, GenerationConfig(), image_index=image_index)


def test_bfloat16_autocast_generates_and_no_prompts_give_no_outputs(setup):
    model, tokenizer, images, prompts = setup
    config = GenerationConfig(max_new_tokens=4, min_new_tokens=4)
    dtypes = []
    linear = next(m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear))
    hook = linear.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    try:
        outputs = generate(
            model, images, prompts, tokenizer.eos_id, tokenizer.pad_id, config, autocast_dtype=torch.bfloat16
        )
    finally:
        hook.remove()
    assert [len(row) for row in outputs] == [4] * len(prompts)
    assert set(dtypes) == {torch.bfloat16}  # the decoder's matrix products ran in bfloat16
    dtypes.clear()
    hook = linear.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    try:
        streamed = list(
            stream(model, images[:1], prompts[0], tokenizer.eos_id, tokenizer.pad_id, config, torch.bfloat16)
        )
    finally:
        hook.remove()
    assert set(dtypes) == {torch.bfloat16}  # streaming too
    # what generate makes for that prompt alone (a batch of three may round differently in bfloat16)
    alone = generate(
        model, images[:1], prompts[:1], tokenizer.eos_id, tokenizer.pad_id, config, autocast_dtype=torch.bfloat16
    )
    assert [streamed] == alone
    assert generate(model, images, [], tokenizer.eos_id, tokenizer.pad_id, config) == []


def test_generation_benchmark_times_both_paths():
    timings = benchmark_generation("tiny", batch_sizes=[2], new_tokens=4, repeats=1)
    assert [(t.batch_size, t.dtype, t.new_tokens) for t in timings] == [(2, "float32", 4)]
    assert timings[0].ms_cache > 0 and timings[0].ms_no_cache > 0
    assert "cache speedup" in format_timings(timings)
    with pytest.raises(ValueError, match="100 new tokens need 106 positions, but preset 'tiny' has"):
        benchmark_generation("tiny", new_tokens=100)
