"""Balanced batches over several data sets: every batch holds the same number of images from each.

The paper samples "the same amount of data from different datasets" per mini-batch (16 images per
data set) to stop the largest data set from dominating. An epoch is as many batches as the largest
data set fills; smaller data sets cycle through their images, reshuffled on every cycle.

Under DDP every rank computes the same global batch from (seed, epoch) and keeps its own slice of
each data set's part, so every rank sees every data set in every batch and all ranks step together.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class BalancedBatchSampler(Sampler[list[int]]):
    """Batch sampler over a ConcatDataset laid out in data set order (global index = offset_n + local).

    Each yielded batch is this rank's per_dataset // world_size indices of data set 0, then data set 1, ...
    """

    def __init__(self, sizes: Sequence[int], per_dataset: int, *, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.sizes = [int(n) for n in sizes]
        if not self.sizes:
            raise ValueError("BalancedBatchSampler needs at least one data set")
        empty = [i for i, n in enumerate(self.sizes) if n <= 0]
        if empty:
            raise ValueError(f"data set(s) #{empty} have no samples; every data set needs at least one image")
        if per_dataset < 1:
            raise ValueError(f"per_dataset must be at least 1, got {per_dataset}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        if per_dataset % world_size:
            raise ValueError(
                f"per_dataset ({per_dataset}) must be divisible by the number of processes ({world_size}) so every "
                f"rank gets the same share of each data set; use a multiple of {world_size}"
            )
        self.per_dataset = int(per_dataset)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.per_rank = self.per_dataset // self.world_size
        self.offsets = [int(o) for o in np.cumsum([0] + self.sizes[:-1])]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle the next iteration uses (the same on every rank)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return max(1, max(self.sizes) // self.per_dataset)

    def _stream(self, dataset: int, count: int) -> np.ndarray:
        """The first `count` local indices of a data set this epoch: one fresh permutation per cycle."""
        size = self.sizes[dataset]
        cycles = -(-count // size)
        perms = [
            np.random.default_rng([self.seed % 2**64, self.epoch % 2**64, dataset, c]).permutation(size)
            for c in range(cycles)
        ]
        return np.concatenate(perms)[:count]

    def global_batches(self) -> list[list[list[int]]]:
        """This epoch's batches across all ranks: batch -> data set -> per_dataset global indices."""
        n = len(self)
        streams = [self._stream(d, n * self.per_dataset) + self.offsets[d] for d in range(len(self.sizes))]
        return [
            [s[b * self.per_dataset : (b + 1) * self.per_dataset].tolist() for s in streams]
            for b in range(n)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        lo, hi = self.rank * self.per_rank, (self.rank + 1) * self.per_rank
        for parts in self.global_batches():
            yield [i for part in parts for i in part[lo:hi]]
