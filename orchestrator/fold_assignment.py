"""Assign cross-validation folds to a dataset that has none, and keep them stable.

Folds are assigned to whole groups (source recordings), so that the clips of one
recording are always in one fold, and balanced per class: each group goes to the
fold that holds the fewest clips of its class so far. Clips that already have a
fold (from the feature store of an earlier run) keep it, and a new clip of a group
that already has a fold joins that fold, so a rerun or an added file never moves
a clip. The assignment is deterministic: groups are ordered by size (largest
first), then by a hash of their key, never by the order files were listed.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_ASSIGNED_FOLDS = 5


@dataclass(frozen=True)
class FoldItem:
    """One clip to place: its key (rel path), training class id and group key."""

    key: str
    label: int
    group: str


def group_id(group: str) -> int:
    """An int64 source-recording id for a group key: the number itself when it is one,
    else a stable 62-bit hash (``blake2b``) of the text."""
    text = group.strip()
    if text.isdigit() and len(text) < 18:
        return int(text)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


def _stable_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def assign_folds(
    items: Sequence[FoldItem], n_folds: int, previous: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Fold (1..``n_folds``) of every item: stratified by class, grouped, stable.

    Args:
        items: The clips to place.
        n_folds: Number of folds K (>= 2).
        previous: Folds already given to keys (e.g. read back from the feature store);
            kept as they are, and new members of those keys' groups follow them.

    Returns:
        ``key -> fold`` for every item.

    Raises:
        ValueError: ``n_folds < 2``.
    """
    if n_folds < 2:
        raise ValueError(f"assigned folds need at least 2 folds, got {n_folds}")
    previous = dict(previous or {})
    out: dict[str, int] = {}
    per_class_fold: Counter[tuple[int, int]] = Counter()
    per_fold: Counter[int] = Counter()
    group_fold: dict[str, int] = {}
    pending: dict[str, list[FoldItem]] = defaultdict(list)
    for item in items:
        fold = previous.get(item.key)
        if fold is not None:
            out[item.key] = fold
            group_fold.setdefault(item.group, fold)
            per_class_fold[(item.label, fold)] += 1
            per_fold[fold] += 1
        else:
            pending[item.group].append(item)
    order = sorted(pending, key=lambda g: (-len(pending[g]), _stable_key(g)))
    for group in order:
        members = pending[group]
        fold = group_fold.get(group)
        if fold is None:
            label = Counter(m.label for m in members).most_common(1)[0][0]
            fold = min(
                range(1, n_folds + 1),
                key=lambda f: (per_class_fold[(label, f)], per_fold[f], f),
            )
            group_fold[group] = fold
        for m in members:
            out[m.key] = fold
            per_class_fold[(m.label, fold)] += 1
            per_fold[fold] += 1
    return out
