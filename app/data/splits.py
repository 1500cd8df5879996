"""Leak-free, seeded splits decided on 64-bit hashes, so that memory grows with the pair count only.

`app.data.corpus` reads a corpus once and keeps, per valid pair, three 64-bit numbers: a seeded key of
the pair (its order in the splits and its identity for duplicates) and a hash of each side. These
functions decide everything from those arrays — duplicates, the `max_pairs` subset, the groups of
pairs that share a side, which group goes to test, dev or train, and the train shards — without
holding a sentence: 5 million pairs cost about 120 MB of arrays, not gigabytes of text.
"""

from __future__ import annotations

import numpy as np

TRAIN, DEV, TEST = 0, 1, 2  # a pair's split code; DROPPED for duplicates and pairs outside max_pairs
DROPPED = -1
SPLIT_CODES = {"train": TRAIN, "dev": DEV, "test": TEST}
MAX_HELD_OUT_FRACTION = 0.1  # dev and test each take at most this share of a small corpus


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """Indices of the first pair with each key, in reading order (later equal keys are duplicates)."""
    _, first = np.unique(keys, return_index=True)
    return np.sort(first)


def seeded_subset(indices: np.ndarray, subset_keys: np.ndarray, max_pairs: int | None) -> np.ndarray:
    """The `max_pairs` of `indices` with the smallest seeded subset keys (all when None), in their
    original order."""
    if max_pairs is None or len(indices) <= max_pairs:
        return indices
    chosen = np.argpartition(subset_keys[indices], max_pairs - 1)[:max_pairs]
    return indices[np.sort(chosen)]


def component_labels(source_hashes: np.ndarray, target_hashes: np.ndarray) -> np.ndarray:
    """For each pair, the smallest index of the pairs it shares a source or a target with, directly or
    through a chain (its group). Minimum-label propagation with pointer jumping, vectorised."""
    sources, targets = _Grouping(source_hashes), _Grouping(target_hashes)
    labels = np.arange(len(source_hashes))
    while True:
        smallest = _jump(np.minimum(sources.spread_minimum(labels), targets.spread_minimum(labels)))
        if np.array_equal(smallest, labels):
            return labels
        labels = smallest


class _Grouping:
    """Pairs with equal hashes, sorted together once, so each pass takes a group minimum in O(n)."""

    def __init__(self, hashes: np.ndarray):
        self.order = np.argsort(hashes, kind="stable")
        ordered = hashes[self.order]
        self.starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self.sizes = np.diff(np.r_[self.starts, len(hashes)])

    def spread_minimum(self, labels: np.ndarray) -> np.ndarray:
        """Each pair gets the smallest label among the pairs with its hash."""
        if len(labels) == 0:
            return labels
        minimum = np.minimum.reduceat(labels[self.order], self.starts)
        spread = np.empty_like(labels)
        spread[self.order] = np.repeat(minimum, self.sizes)
        return spread


def _jump(labels: np.ndarray) -> np.ndarray:
    """Follows label → label of the label until nothing changes (flattens chains in a few passes)."""
    while True:
        jumped = labels[labels]
        if np.array_equal(jumped, labels):
            return labels
        labels = jumped


def held_out_sizes(
    pair_count: int, group_count: int, test_size: int, dev_size: int
) -> tuple[int, int, list[str]]:
    """Shrinks the requested test/dev sizes for a small corpus so that train is never empty.

    Each held-out split gets at most 10% of the pairs (at least 1 when there are 3 or more groups);
    with fewer than 3 groups, everything goes to train.
    """
    cap = max(1, int(pair_count * MAX_HELD_OUT_FRACTION)) if group_count >= 3 else 0
    test, dev = min(test_size, cap), min(dev_size, cap)
    notes = []
    if (test, dev) != (test_size, dev_size):
        notes.append(
            f"the corpus ({pair_count:,} pairs in {group_count:,} groups) is too small for test {test_size:,}"
            f" / dev {dev_size:,}; using test {test:,} / dev {dev:,}"
        )
    return test, dev, notes


def assign_splits(
    source_hashes: np.ndarray, target_hashes: np.ndarray, keys: np.ndarray, test_size: int, dev_size: int
) -> tuple[np.ndarray, int, list[str]]:
    """Split codes (TRAIN/DEV/TEST) of distinct pairs without leakage; also the group count and notes.

    Groups of pairs sharing a side (`component_labels`) are visited in a seeded order (their smallest
    key); a group goes to test if it fits in what test still needs, else to dev if it fits there, else
    to train. So held-out splits never exceed their size and large groups (frequent sentences) stay in
    train, and no sentence of dev or test occurs in train.
    """
    _, group_of = np.unique(component_labels(source_hashes, target_hashes), return_inverse=True)
    group_of = group_of.reshape(-1)
    group_count = int(group_of.max()) + 1 if len(group_of) else 0
    sizes = np.bincount(group_of, minlength=group_count)
    group_keys = np.full(group_count, np.iinfo(np.uint64).max, dtype=np.uint64)
    np.minimum.at(group_keys, group_of, keys)
    order = np.argsort(group_keys, kind="stable")
    test, dev, notes = held_out_sizes(len(keys), group_count, test_size, dev_size)
    targets = {TEST: test, DEV: dev}
    group_split = _assign_groups(order, sizes, targets)
    notes += _fill_empty_held_out(order, sizes, group_split, targets)
    return group_split[group_of], group_count, notes


def _assign_groups(order: np.ndarray, sizes: np.ndarray, targets: dict[int, int]) -> np.ndarray:
    group_split = np.full(len(sizes), TRAIN, dtype=np.int8)
    counts = dict.fromkeys(targets, 0)
    for group, size in zip(order.tolist(), sizes[order].tolist(), strict=True):
        if counts == targets:
            break  # both held-out splits are full: every later group stays in train
        split = next((code for code in (TEST, DEV) if counts[code] + size <= targets[code]), TRAIN)
        if split != TRAIN:
            group_split[group] = split
            counts[split] += size
    return group_split


def _fill_empty_held_out(
    order: np.ndarray, sizes: np.ndarray, group_split: np.ndarray, targets: dict[int, int]
) -> list[str]:
    """Moves the smallest train group into a held-out split that no group fitted, keeping train non-empty."""
    notes = []
    for code, name in ((TEST, "test"), (DEV, "dev")):
        train_groups = order[group_split[order] == TRAIN]
        if targets[code] > 0 and not (group_split == code).any() and len(train_groups) >= 2:
            smallest = train_groups[np.argmin(sizes[train_groups])]
            group_split[smallest] = code
            notes.append(
                f"no group fitted in {name} ({targets[code]:,}); it got one group of {int(sizes[smallest]):,}"
            )
    return notes


def shard_sizes(pair_count: int, shard_pairs: int) -> list[int]:
    """Pairs per train file: one file up to `shard_pairs`, else the fewest shards of at most that many,
    balanced to within one pair (so that workers reading one shard each get equal work)."""
    shards = max(1, -(-pair_count // shard_pairs))
    return [pair_count * (index + 1) // shards - pair_count * index // shards for index in range(shards)]
