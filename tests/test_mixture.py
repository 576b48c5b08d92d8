from collections import Counter

import pytest

from vlm.data.mixture import MixtureSampler, default_num_workers


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


def test_grouped_draws_of_an_image_come_one_after_another_and_the_epoch_draws_the_same_samples():
    # Part 0: 12 captions, 3 per image; part 1: 30 single samples.
    groups = [[[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]], None]
    grouped = MixtureSampler([12, 30], [1.0, 1.0], epoch_size=48, seed=4, groups=groups)
    plain = MixtureSampler([12, 30], [1.0, 1.0], epoch_size=48, seed=4)
    grouped_draws = [index for index, _ in grouped]
    part_of = Counter(index < 12 for index in grouped_draws)
    assert part_of == Counter(index < 12 for index, _ in plain) == {True: 24, False: 24}
    assert Counter(i for i in grouped_draws if i < 12) == {i: 2 for i in range(12)}  # each caption twice, as before
    runs = [grouped_draws[i : i + 3] for i, index in enumerate(grouped_draws) if index < 12 and index % 3 == 0]
    assert len(runs) == 8 and all(run == [run[0], run[0] + 1, run[0] + 2] for run in runs)


def test_a_grouped_epoch_is_the_same_for_any_start_and_rank_split():
    groups = [[[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]]
    whole = MixtureSampler([10], epoch_size=10, seed=1, groups=groups)
    whole.set_epoch(2)
    draws = list(whole)
    whole.set_epoch(2, start=6)
    assert list(whole) == draws[6:]
    ranks = [MixtureSampler([10], epoch_size=10, seed=1, rank=r, world_size=2, groups=groups) for r in (0, 1)]
    for rank, sampler in enumerate(ranks):
        sampler.set_epoch(2)
        assert list(sampler) == draws[rank::2]


@pytest.mark.parametrize(
    ("cores", "processes", "workers"), [(2, 1, 1), (1, 1, 1), (16, 1, 8), (16, 2, 7), (64, 8, 7), (8, 4, 1)]
)
def test_default_workers_leave_a_core_to_each_training_process(cores, processes, workers):
    assert default_num_workers(cores, processes) == workers
