import pytest
import torch
from helpers import text_batch, tiny_model, tiny_tokenizer

from vlm.data.batch import left_pad
from vlm.model.config import DecoderConfig, ProjectorConfig, VisionConfig, VLMConfig
from vlm.model.decoder import rounded_row_count
from vlm.model.masks import is_right_padded, prediction_mask
from vlm.model.projector import average_pool, pixel_shuffle

PAIRS = [
    (None, "a red circle"),
    ("what color is the circle?", "red"),
    ("is it?", "two blue squares above a green star"),
]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def small_config(image_size: int, patch_size: int, reduction: int, mode: str = "pixel_shuffle") -> VLMConfig:
    return VLMConfig(
        vision=VisionConfig(image_size=image_size, patch_size=patch_size, width=24, depth=1, heads=2),
        projector=ProjectorConfig(reduction=reduction, mode=mode),
        decoder=DecoderConfig(max_positions=96, width=32, depth=1, heads=2),
    )


@pytest.mark.parametrize(
    "image_size, patch_size, reduction, mode",
    [
        (32, 8, 1, "pixel_shuffle"),
        (32, 8, 2, "pixel_shuffle"),
        (48, 8, 3, "pixel_shuffle"),
        (64, 16, 2, "avg_pool"),
        (64, 8, 4, "avg_pool"),
        (24, 4, 2, "pixel_shuffle"),
    ],
)
def test_shape_after_every_stage(tokenizer, image_size, patch_size, reduction, mode):
    config = small_config(image_size, patch_size, reduction, mode)
    model = tiny_model(tokenizer, config)
    batch = text_batch(tokenizer, config, PAIRS)
    images = batch["images"]
    assert images.shape == (3, 3, image_size, image_size)
    patches = model.vision_encoder(images)
    num_patches = (image_size // patch_size) ** 2
    assert patches.shape == (3, num_patches, 24)
    image_tokens = model.encode_images(images)
    assert image_tokens.shape == (3, config.num_image_tokens, 32)
    assert config.num_image_tokens == num_patches // reduction**2 == model.projector.reduce(patches).shape[1]
    text_length = batch["input_ids"].shape[1]
    assert model.text_hidden_states(image_tokens, batch["input_ids"]).shape == (3, text_length, 32)
    assert model.logits(images, batch["input_ids"], batch["attention_mask"]).shape == (
        3,
        text_length,
        tokenizer.vocab_size,
    )
    assert model(**batch).shape == ()


def test_right_padding_is_told_from_left_padding_and_holes():
    assert is_right_padded(torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]]))
    assert not is_right_padded(torch.tensor([[1, 1, 0], [0, 1, 1]]))  # a left-padded row
    assert not is_right_padded(torch.tensor([[1, 0, 1]]))  # a hole


def test_average_pool_keeps_each_feature_in_its_own_channel():
    patches = torch.arange(16.0).view(1, 16, 1)
    pooled = average_pool(torch.cat([patches, -10 * patches], dim=2), 2)  # (1, 4, 2): two features per patch
    assert pooled[0].tolist() == [[2.5, -25.0], [4.5, -45.0], [10.5, -105.0], [12.5, -125.0]]


@pytest.mark.parametrize("hidden_mult", [1.0, 2.0])
def test_projector_is_a_non_linear_map_to_the_decoder_width(hidden_mult):
    from vlm.model.config import ProjectorConfig
    from vlm.model.projector import Projector

    torch.manual_seed(0)
    projector = Projector(ProjectorConfig(reduction=1, hidden_mult=hidden_mult), vision_width=8, decoder_width=16)
    assert projector.mlp[0].out_features == round(16 * hidden_mult)  # the hidden layer: hidden_mult decoder widths
    a, b = torch.randn(2, 1, 4, 8).unbind(0)  # (1, 4, 8) each: a 2x2 grid of patches
    assert projector(a).shape == (1, 4, 16)
    # An affine map would give f(a) + f(b) - f(0) = f(a + b); the GELU between the layers must not.
    affine_guess = projector(a) + projector(b) - projector(torch.zeros_like(a))
    assert not torch.allclose(affine_guess, projector(a + b), atol=1e-3)


def test_the_decoder_has_its_configs_sizes_and_gpt2s_init():
    # Every weight N(0, 0.02) and every bias 0, except the projections that write into the residual stream:
    # N(0, 0.02 / sqrt(2 * depth)), so that its variance does not grow with the depth.
    from vlm.model.decoder import Decoder

    torch.manual_seed(0)
    config = DecoderConfig(width=256, depth=4, heads=4, mlp_ratio=2.0, vocab_size=512, max_positions=64)
    decoder = Decoder(config)
    assert len(decoder.blocks) == 4 and decoder.blocks[0].mlp.up.out_features == 512
    for name, parameter in decoder.named_parameters():
        if name.endswith("bias") and "norm" not in name:
            assert not parameter.any(), name
        elif name.endswith(("attention.out.weight", "mlp.down.weight")):
            assert parameter.std().item() == pytest.approx(0.02 / 8**0.5, rel=0.05), name
        elif "norm" not in name:
            assert parameter.std().item() == pytest.approx(0.02, rel=0.05), name
            assert abs(parameter.mean().item()) < 0.002, name


def test_attention_dropout_applies_in_training_only():
    from vlm.model.decoder import SelfAttention

    torch.manual_seed(0)
    attention, x = SelfAttention(width=32, heads=2, dropout=0.5), torch.randn(2, 6, 32)
    assert not torch.equal(attention(x, None), attention(x, None))  # two draws of the dropout mask
    attention.eval()
    assert torch.equal(attention(x, None), attention(x, None))


def test_the_last_position_the_decoder_has_is_allowed_and_the_next_one_refused(tokenizer):
    decoder = tiny_model(tokenizer).decoder
    limit = decoder.config.max_positions
    embeddings, positions = torch.zeros(1, limit + 1, decoder.config.width), torch.arange(limit + 1)[None]
    assert decoder.forward_features(embeddings[:, :limit], positions[:, :limit]).shape[1] == limit
    with pytest.raises(ValueError, match=f"sequence needs position {limit}, but decoder.max_positions is {limit}"):
        decoder.forward_features(embeddings, positions)


def test_pixel_shuffle_groups_neighbouring_patches():
    # A 4x4 grid of patches numbered 0..15, one feature each: factor 2 gathers each 2x2 block into one token.
    patches = torch.arange(16.0).view(1, 16, 1)
    shuffled = pixel_shuffle(patches, 2)
    assert shuffled.shape == (1, 4, 4)
    assert shuffled[0, 0].tolist() == [0, 1, 4, 5] and shuffled[0, 3].tolist() == [10, 11, 14, 15]
    assert average_pool(patches, 2)[0, :, 0].tolist() == [2.5, 4.5, 10.5, 12.5]


def test_padding_and_loss_masks_for_mixed_lengths(tokenizer):
    config = small_config(32, 8, 2)
    batch = text_batch(tokenizer, config, PAIRS)
    lengths = batch["attention_mask"].sum(1).tolist()
    prompts = [len(tokenizer.prompt(q)) for q, _ in PAIRS]
    targets = [len(tokenizer.encode(t)) + 1 for _, t in PAIRS]  # + end token
    assert lengths == [p + t for p, t in zip(prompts, targets)]
    for row, (prompt, target) in enumerate(zip(prompts, targets)):
        ids, mask, valid = batch["input_ids"][row], batch["target_mask"][row], batch["attention_mask"][row]
        assert not mask[:prompt].any() and mask[prompt : prompt + target].all() and not mask[prompt + target :].any()
        assert (ids[~valid] == tokenizer.pad_id).all() and ids[prompt + target - 1] == tokenizer.eos_id


def test_loss_counts_only_target_tokens(tokenizer):
    config = small_config(32, 8, 2)
    model = tiny_model(tokenizer, config)
    batch = text_batch(tokenizer, config, PAIRS)
    loss = model(**batch)
    logits = model.logits(batch["images"], batch["input_ids"], batch["attention_mask"])
    predicted = batch["target_mask"][:, 1:]
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][predicted], batch["input_ids"][:, 1:][predicted])
    torch.testing.assert_close(loss, manual)
    # Changing padding or prompt-side targets leaves the loss alone; the loss is unchanged by extra padding.
    padded = {k: torch.cat([v, torch.zeros_like(v[:, :3])], 1) if k != "images" else v for k, v in batch.items()}
    padded["input_ids"][:, -3:] = tokenizer.pad_id
    torch.testing.assert_close(model(**padded), loss)


def test_row_counts_round_up_by_at_most_a_sixteenth_to_few_shapes():
    # The rule: the smallest multiple of a sixteenth of the count's power of two (the largest one not above it), or
    # of 8 if that is more, that is not below the count.
    for count in range(1, 5000):
        power = 1
        while power * 2 <= count:
            power *= 2
        step = max(8, power // 16)
        rounded = rounded_row_count(count)
        assert rounded % step == 0 and count <= rounded < count + step, (count, rounded, step)
        assert rounded - count <= max(7, count / 16)
    # The main job's batches, 1834-2075 decoder tokens: steps of 64, then 128 from 2048, so a handful of shapes.
    assert len({rounded_row_count(n) for n in range(1834, 2076)}) <= (2076 - 1834) // 64 + 2


def test_token_rows_are_the_real_tokens_then_copies_of_the_first_up_to_the_rounded_count():
    from vlm.model.decoder import TokenRows

    valid = torch.zeros(3, 20, dtype=torch.bool)
    valid[0, :9], valid[2, 4:] = True, True  # 9 + 16 = 25 real tokens, rounded to 32 rows
    token_rows = TokenRows(valid)
    grid = torch.arange(60.0).reshape(3, 20, 1)
    real = grid[valid]
    rows = token_rows.to_rows(grid)
    assert torch.equal(rows, torch.cat([real, real[:1].expand(7, 1)]))
    assert torch.equal(token_rows.to_grid(rows), grid * valid[..., None])
    asked = torch.zeros_like(valid)
    asked[2, 10:13] = True  # 3 rows of the second real row, rounded to 8
    assert token_rows.rows_of(asked).tolist() == [15, 16, 17, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("prefix_lm", [False, True])
def test_training_pass_over_real_tokens_gives_the_padded_pass_loss_and_gradients(tokenizer, prefix_lm):
    # The loss runs the decoder on real tokens only (`Decoder.forward_rows`); `logits` runs it on every slot.
    config = small_config(32, 8, 2)
    config.decoder.depth = 2
    config.prefix_lm = prefix_lm
    model = tiny_model(tokenizer, config).train()
    batch = text_batch(tokenizer, config, PAIRS)
    assert not batch["attention_mask"].all()  # texts of three lengths: two rows padded
    # Row counts are rounded up with copies of a real token: here both the tokens' and the outputs'.
    num_tokens = 3 * config.num_image_tokens + int(batch["attention_mask"].sum())
    num_outputs = int(prediction_mask(batch["target_mask"] & batch["attention_mask"]).sum())
    assert rounded_row_count(num_tokens) > num_tokens and rounded_row_count(num_outputs) > num_outputs

    def gradients(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    logits = model.logits(batch["images"], batch["input_ids"], batch["attention_mask"])
    predicted = batch["target_mask"][:, 1:]
    padded_loss = torch.nn.functional.cross_entropy(logits[:, :-1][predicted], batch["input_ids"][:, 1:][predicted])
    padded_gradients = gradients(padded_loss)
    loss = model(**batch)
    torch.testing.assert_close(loss, padded_loss)
    for row_gradient, padded_gradient in zip(gradients(loss), padded_gradients, strict=True):
        torch.testing.assert_close(row_gradient, padded_gradient)

    # Left padding (a per-row mask and positions) reads the same tokens: the same loss.
    shifts = (~batch["attention_mask"]).sum(1).tolist()
    left = {k: v if k == "images" else torch.stack([r.roll(s) for r, s in zip(v, shifts)]) for k, v in batch.items()}
    assert not left["attention_mask"][:, 0].all()
    torch.testing.assert_close(model(**left), loss)


def test_per_sample_loss_is_the_mean_of_each_samples_mean(tokenizer):
    config = small_config(32, 8, 2)
    model = tiny_model(tokenizer, config)
    batch = text_batch(tokenizer, config, PAIRS)  # targets of different lengths: 4, 2 and 8 tokens
    logits = model.logits(batch["images"], batch["input_ids"], batch["attention_mask"])
    predicted = batch["target_mask"][:, 1:]
    per_row = [
        torch.nn.functional.cross_entropy(logits[row, :-1][predicted[row]], batch["input_ids"][row, 1:][predicted[row]])
        for row in range(len(PAIRS))
    ]
    torch.testing.assert_close(model(**batch, per_sample=True), torch.stack(per_row).mean())
    assert not torch.allclose(model(**batch, per_sample=True), model(**batch))


def test_per_sample_loss_averages_over_the_samples_that_have_targets(tokenizer):
    # A sample cut before its answer has nothing to predict and does not count; one with a single target does.
    config = small_config(32, 8, 2)
    model = tiny_model(tokenizer, config)
    batch = text_batch(tokenizer, config, PAIRS)
    batch["target_mask"][0] = False
    single = batch["target_mask"][1].nonzero()[0].item()
    batch["target_mask"][1] = False
    batch["target_mask"][1, single] = True
    logits = model.logits(batch["images"], batch["input_ids"], batch["attention_mask"])
    predicted = batch["target_mask"][:, 1:]
    assert predicted.sum(1).tolist()[:2] == [0, 1]
    per_row = [
        torch.nn.functional.cross_entropy(logits[row, :-1][predicted[row]], batch["input_ids"][row, 1:][predicted[row]])
        for row in (1, 2)
    ]
    torch.testing.assert_close(model(**batch, per_sample=True), torch.stack(per_row).mean())


@pytest.mark.parametrize("prefix_lm", [False, True])
def test_later_text_never_changes_earlier_logits_but_the_image_does(tokenizer, prefix_lm):
    config = small_config(32, 8, 2)
    config.prefix_lm = prefix_lm
    model = tiny_model(tokenizer, config)
    batch = text_batch(tokenizer, config, PAIRS[:1])
    images, ids = batch["images"], batch["input_ids"]
    logits = model.logits(images, ids)
    changed_ids = ids.clone()
    changed_ids[0, 4] = (changed_ids[0, 4] + 1) % tokenizer.num_tokens
    changed = model.logits(images, changed_ids)
    torch.testing.assert_close(changed[:, :4], logits[:, :4])
    assert not torch.allclose(changed[:, 4:], logits[:, 4:])
    other_image = model.logits(torch.randn_like(images), ids)
    assert not torch.allclose(other_image[:, 0], logits[:, 0])


@pytest.mark.parametrize("prefix_lm", [False, True])
def test_prefix_lm_lets_the_first_image_token_see_the_last(tokenizer, prefix_lm):
    config = small_config(32, 8, 1)
    config.prefix_lm = prefix_lm
    model = tiny_model(tokenizer, config)
    image_tokens = torch.randn(1, config.num_image_tokens, 32)
    ids = torch.tensor([tokenizer.caption_prompt()])
    hidden = model.decoder.forward_features  # look at the first image slot's hidden state
    first = []
    for last_token in (image_tokens[:, -1:], torch.randn(1, 1, 32)):
        tokens = torch.cat([image_tokens[:, :-1], last_token], 1)
        embeddings = model._embed(tokens, ids)
        positions = torch.arange(embeddings.shape[1])[None]
        from vlm.model.masks import prefix_attention_mask

        mask = prefix_attention_mask(embeddings.shape[1], model.num_prefix) if model.num_prefix else None
        first.append(hidden(embeddings, positions, mask)[0, 0])
    assert torch.allclose(first[0], first[1]) != prefix_lm


def test_cache_logits_equal_recomputed_logits_over_20_steps(tokenizer):
    config = small_config(32, 8, 2)
    config.decoder.max_positions = 64
    model = tiny_model(tokenizer, config)
    images = torch.randn(2, 3, 32, 32)
    prompts = [tokenizer.caption_prompt(), tokenizer.question_prompt("what color is the circle?")]
    ids, valid = left_pad(prompts, tokenizer.pad_id)
    with torch.no_grad():
        logits, state = model.prefill(model.encode_images(images), ids, valid, max_new_tokens=20)
        for _ in range(20):
            recomputed = model.logits(images, ids, valid)[:, -1]
            torch.testing.assert_close(logits, recomputed, atol=1e-5, rtol=1e-5)
            next_tokens = logits.argmax(-1)
            ids = torch.cat([ids, next_tokens[:, None]], 1)
            valid = torch.cat([valid, torch.ones(2, 1, dtype=torch.bool)], 1)
            logits = model.decode_step(next_tokens, state)
    assert state.cache.length == config.num_image_tokens + len(prompts[1]) + 20  # one slot per step


def test_the_cache_reordered_for_beams_hands_each_row_its_old_rows_keys_and_values():
    from vlm.model.decoder import KVCache

    cache = KVCache(num_layers=2, max_len=5)
    keys = torch.arange(2 * 3, dtype=torch.float32).reshape(2, 1, 3, 1)  # rows 0 and 1, three positions each
    for layer in range(2):
        cache.update(layer, keys + 10 * layer, -keys)
    cache.advance(3)
    cache.select(torch.tensor([1, 1, 0]))  # three beams: two continue old row 1, one old row 0
    for layer in range(2):
        new = torch.full((3, 1, 1, 1), 99.0)
        keys_so_far, values_so_far = cache.update(layer, new, -new)
        assert torch.equal(keys_so_far[:, :, :3], keys[[1, 1, 0]] + 10 * layer)
        assert torch.equal(values_so_far, torch.cat([-keys[[1, 1, 0]], -new], dim=2))


def test_a_new_cache_holds_the_decoders_positions_unless_told_otherwise(tokenizer):
    decoder = tiny_model(tokenizer).decoder
    assert decoder.new_cache().max_len == decoder.config.max_positions and decoder.new_cache(7).max_len == 7


def test_left_padded_rows_match_each_row_alone(tokenizer):
    config = small_config(32, 8, 2)
    model = tiny_model(tokenizer, config)
    images = torch.randn(2, 3, 32, 32)
    prompts = [tokenizer.caption_prompt(), tokenizer.question_prompt("two blue squares above a green star?")]
    with torch.no_grad():
        image_tokens = model.encode_images(images)
        batched, _ = model.prefill(image_tokens, *left_pad(prompts, tokenizer.pad_id), max_new_tokens=1)
        for row, prompt in enumerate(prompts):
            alone, _ = model.prefill(
                image_tokens[row : row + 1], *left_pad([prompt], tokenizer.pad_id), max_new_tokens=1
            )
            torch.testing.assert_close(batched[row], alone[0], atol=1e-5, rtol=1e-5)


def test_prefill_rejects_right_padding_and_too_long_sequences(tokenizer):
    config = small_config(32, 8, 2)
    model = tiny_model(tokenizer, config)
    image_tokens = torch.randn(1, config.num_image_tokens, 32)
    ids = torch.tensor([[tokenizer.bos_id, tokenizer.pad_id]])
    with pytest.raises(ValueError, match="left-padded"):
        model.prefill(image_tokens, ids, torch.tensor([[True, False]]), 1)
    too_long = torch.full((1, config.decoder.max_positions), tokenizer.bos_id)
    with pytest.raises(ValueError, match="exceeds|max_positions"):
        model.logits(torch.randn(1, 3, 32, 32), too_long)


@pytest.mark.parametrize("masked", [False, True])
def test_decoder_outputs_for_the_last_positions_only_equal_those_of_the_full_pass(tokenizer, masked):
    config = small_config(32, 8, 2)
    config.decoder.depth = 2
    model = tiny_model(tokenizer, config)
    embeddings = torch.randn(2, 9, 32)
    positions = torch.arange(9)[None]
    from vlm.model.masks import prefix_attention_mask

    mask = prefix_attention_mask(9, 4) if masked else None  # None: plain causal
    full = model.decoder.forward_features(embeddings, positions, mask)
    last = model.decoder.forward_features(embeddings, positions, mask, num_outputs=3)
    assert last.shape == (2, 3, 32)
    torch.testing.assert_close(last, full[:, -3:])


def test_training_and_inference_attention_kernels_agree(tokenizer):
    # On the CPU, training (gradients recorded) runs attention through the math backend and inference through the
    # fused kernel (see `cpu_math_attention`); both must read the same masks: prefix-LM and left padding.
    config = small_config(32, 8, 2)
    model = tiny_model(tokenizer, config)
    images = torch.randn(2, 3, 32, 32)
    ids, valid = left_pad([tokenizer.caption_prompt(), tokenizer.question_prompt("is it?")], tokenizer.pad_id)
    training_kernel = model.logits(images, ids, valid)
    with torch.no_grad():
        inference_kernel = model.logits(images, ids, valid)
    assert training_kernel.requires_grad and not inference_kernel.requires_grad
    torch.testing.assert_close(inference_kernel[valid], training_kernel.detach()[valid], atol=1e-5, rtol=1e-5)


def test_the_decoder_alone_is_a_causal_language_model_over_positions(tokenizer):
    """Decoder.forward (text only): each position's logits are those of the prefix up to it, later tokens change
    nothing before them, and the positions are the tokens' own (0..T-1), not all zero."""
    decoder = tiny_model(tokenizer, seed=3).decoder.eval()
    ids = torch.randint(0, decoder.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = decoder(ids)
        assert logits.shape == (2, 6, decoder.config.vocab_size)
        for t in range(1, 6):
            assert torch.allclose(decoder(ids[:, :t])[:, -1], logits[:, t - 1], atol=1e-5)
        changed = ids.clone()
        changed[:, 4:] = (changed[:, 4:] + 1) % decoder.config.vocab_size
        assert torch.allclose(decoder(changed)[:, :4], logits[:, :4], atol=1e-5)
        assert not torch.allclose(decoder(changed)[:, 4:], logits[:, 4:], atol=1e-3)
        at_zero = decoder.forward_head(decoder.forward_features(decoder.embed_tokens(ids), torch.zeros_like(ids)))
        assert not torch.allclose(at_zero[:, 1:], logits[:, 1:], atol=1e-3)
