"""BalancedBatchSampler: per-batch balance, cycling with reshuffle, per-epoch determinism, DDP slices."""

from __future__ import annotations

import pytest

from train.sampler import BalancedBatchSampler


def split_by_dataset(batch: list[int], sizes: list[int]) -> list[list[int]]:
    """Group a batch's global indices by the data set whose index range holds them, keeping order."""
    bounds, acc = [], 0
    for n in sizes:
        bounds.append((acc, acc + n))
        acc += n
    return [[i for i in batch if lo <= i < hi] for lo, hi in bounds]


def test_every_batch_is_balanced_and_grouped_by_dataset() -> None:
    sizes = [10, 4, 7]
    sampler = BalancedBatchSampler(sizes, 3)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 3  # floor(10 / 3)
    for batch in batches:
        assert len(batch) == 9
        parts = split_by_dataset(batch, sizes)
        assert [len(p) for p in parts] == [3, 3, 3]
        assert batch == parts[0] + parts[1] + parts[2]  # data set 0 first, then 1, then 2


def test_epoch_length_at_least_one() -> None:
    assert len(BalancedBatchSampler([3, 2], 8)) == 1
    assert len(list(BalancedBatchSampler([3, 2], 8))[0]) == 16


def test_each_cycle_shows_every_image_once_and_reshuffles() -> None:
    sizes = [40, 6]
    batches = list(BalancedBatchSampler(sizes, 4, seed=1))
    assert len(batches) == 10
    big = [i for b in batches for i in split_by_dataset(b, sizes)[0]]
    assert sorted(big) == list(range(40))  # the largest data set: each image exactly once per epoch
    small = [i - 40 for b in batches for i in split_by_dataset(b, sizes)[1]]
    assert len(small) == 40
    cycles = [small[k : k + 6] for k in range(0, 36, 6)]
    assert all(sorted(c) == list(range(6)) for c in cycles)
    assert len({tuple(c) for c in cycles}) > 1  # reshuffled between cycles
    assert len(set(small[36:])) == 4  # the partial last cycle has no repeats


def test_same_epoch_same_batches_other_epoch_other_shuffle() -> None:
    a = BalancedBatchSampler([20, 9], 4, seed=7)
    b = BalancedBatchSampler([20, 9], 4, seed=7)
    assert list(a) == list(b) == list(a)
    epoch0 = list(a)
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != epoch0 and sorted(i for bt in epoch1 for i in bt if i < 20) == list(range(20))
    b.set_epoch(1)
    assert list(b) == epoch1
    assert list(BalancedBatchSampler([20, 9], 4, seed=8)) != epoch0


@pytest.mark.slow  # DDP ranks in child processes
def test_ddp_ranks_take_disjoint_slices_of_the_global_batch() -> None:
    sizes = [16, 8, 12]
    full = BalancedBatchSampler(sizes, 4, seed=2)
    ranks = [BalancedBatchSampler(sizes, 4, seed=2, rank=r, world_size=2) for r in range(2)]
    for s in [full, *ranks]:
        s.set_epoch(3)
    assert len(ranks[0]) == len(ranks[1]) == len(full) == 4
    for global_batch, r0, r1 in zip(full, *ranks):
        g, p0, p1 = (split_by_dataset(b, sizes) for b in (global_batch, r0, r1))
        for d in range(len(sizes)):
            assert len(p0[d]) == len(p1[d]) == 2  # every rank sees every data set in every batch
            assert not set(p0[d]) & set(p1[d])
            assert p0[d] + p1[d] == g[d]  # together they are exactly the global batch's part


def test_bad_arguments_are_explained() -> None:
    with pytest.raises(ValueError, match=r"per_dataset \(3\) must be divisible by the number of processes \(2\)"):
        BalancedBatchSampler([10, 10], 3, world_size=2)
    with pytest.raises(ValueError, match="no samples"):
        BalancedBatchSampler([10, 0], 2)
    with pytest.raises(ValueError, match="rank 2"):
        BalancedBatchSampler([10], 2, rank=2, world_size=2)
