from collections import Counter

import pytest

from vlm.data.mixture import MixtureSampler


def part_counts(sampler: MixtureSampler, part_sizes: list[int], epochs: int) -> list[int]:
    """How many draws over `epochs` epochs fell in each part (index ranges laid end to end)."""
    bounds = [sum(part_sizes[: i + 1]) for i in range(len(part_sizes))]
    counts = [0] * len(part_sizes)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for index, _ in sampler:
            counts[next(i for i, bound in enumerate(bounds) if index < bound)] += 1
    return counts


@pytest.mark.parametrize(
    ("sizes", "weights", "shares"),
    [
        ([100, 100], [1.0, 3.0], [0.25, 0.75]),
        ([100, 100], [3.0, 1.0], [0.75, 0.25]),
        ([100, 100], [1.0, 0.0], [1.0, 0.0]),
        ([50, 150], None, [0.25, 0.75]),  # no weights: by size
        ([40, 40, 40], [1.0, 1.0, 8.0], [0.1, 0.1, 0.8]),
    ],
)
def test_draws_fall_in_each_part_in_proportion_to_its_weight(sizes, weights, shares):
    sampler = MixtureSampler(sizes, weights, epoch_size=1000, seed=3)
    counts = part_counts(sampler, sizes, epochs=4)
    assert sum(counts) == 4000
    for count, share in zip(counts, shares):
        assert count == pytest.approx(4000 * share, abs=0.02 * 4000)


def test_a_part_is_drawn_without_replacement_until_every_sample_has_come():
    sampler = MixtureSampler([30, 100], [3.0, 1.0], epoch_size=100, seed=1)
    sampler.set_epoch(0)
    small = Counter(index for index, _ in sampler if index < 30)
    assert sum(small.values()) == 75 and set(small) == set(range(30))  # 75 draws: each of 30 twice or three times
    assert set(small.values()) == {2, 3}


def test_ranks_take_disjoint_shares_that_make_up_the_epoch_and_a_start_skips_the_draws_taken():
    whole = MixtureSampler([20, 60], [1.0, 1.0], epoch_size=64, seed=2)
    whole.set_epoch(1)
    draws = list(whole)
    shares = []
    for rank in (0, 1):
        sampler = MixtureSampler([20, 60], [1.0, 1.0], epoch_size=64, seed=2, rank=rank, world_size=2)
        sampler.set_epoch(1)
        shares.append(list(sampler))
    assert len(shares[0]) == len(shares[1]) == 32
    assert shares[0] == draws[0::2] and shares[1] == draws[1::2]
    whole.set_epoch(1, start=40)
    assert list(whole) == draws[40:]  # a resumed run goes on where it stopped


def test_a_keyed_draw_gives_the_same_example_whichever_process_loads_it():
    """The seed of a draw governs the data set's own random choices (varied renderings) as well as the transform's,
    so a resumed run or another worker loads the very same example."""
    import torch

    from vlm.data.mixture import TokenizedDataset
    from vlm.data.shapes import ShapesDataset
    from vlm.data.transforms import build_transform
    from vlm.model.tokenizer import Tokenizer

    scenes = ShapesDataset("train", 4, varied=1.0)
    dataset = TokenizedDataset(scenes, Tokenizer.build(scenes.texts()), build_transform(64, train=True), 40)
    first = dataset[(2, 11)]
    torch.rand(5)  # the global generator moves on between the two loads, as it does across processes
    assert torch.equal(dataset[(2, 11)].image, first.image)
    assert not torch.equal(dataset[(2, 12)].image, first.image)
