"""The variant part of ``submit-dataset --variants``: one plan per variant of the store.

A variant (``docs/store-layout.md``, "Variants") is extracted like the originals: its
clips go to the ``extract`` queue one message per (store chunk, variant), addressed to
the variant (``contract.wire.variant_url``), with its own deterministic task ids and
outcome hashes. Each variant gets its own submission record (id
``<submission>.<variant>``), so the reconciler, ``status`` and the lost-message
requeue treat it exactly like a submission of originals. A rerun enqueues only the
variant clips that are neither done, queued nor failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import redis

from orchestrator.submission import SubmissionPlan, manifest_indices, split_clips
from workers.audio_variants import Variant, variant_set
from workers.redis_records import SubmissionRecords


def resolve_variants(spec: str) -> tuple[Variant, ...]:
    """The variants of a ``--variants`` value (``none``, ``light``, ``sbcnn``, or names).

    Raises:
        ValueError: an unknown set or variant name.
    """
    return variant_set(spec)


def variant_specs(variants: Sequence[Variant]) -> dict[str, dict]:
    """``name -> spec`` for ``storage.store_layout.create_or_extend(variants=...)``."""
    return {v.name: v.to_dict() for v in variants}


def plan_variants(
    plan: SubmissionPlan,
    variants: Sequence[Variant],
    client: redis.Redis,
    records: SubmissionRecords,
    *,
    retry_failed: bool = False,
) -> list[SubmissionPlan]:
    """One plan per variant: the manifest's clips split by their state in that variant.

    ``plan`` is the originals' plan, made with these variants in its layout.
    """
    wanted = manifest_indices(plan.store, plan.manifest)
    plans = []
    for variant in variants:
        store = plan.store.variant_store(variant.name)
        to_enqueue, done, queued, failed = split_clips(
            store, wanted, client, records, retry_failed=retry_failed
        )
        plans.append(
            replace(
                plan,
                submission_id=f"{plan.submission_id}.{variant.name}",
                store_url=store.url,
                store=store,
                to_enqueue=to_enqueue,
                already_done=done,
                already_queued=queued,
                already_failed=failed,
                added=[],
                gone=[],
                created_store=False,
                variants_added=[],
            )
        )
    return plans
