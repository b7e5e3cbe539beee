"""Batches: many documents, one run each, submitted as a stream with back-pressure, resumable.

A batch is identified by its name (`--name`; by default the input's file or folder name plus a
short hash of its absolute path, so running the same command again finds the same batch). Running
a batch again skips documents that already succeeded with the same content, retries the ones
that failed, ended partial or never got sent, and leaves alone the ones still in flight.

A batch remembers the provider and the models its runs were sent with: resuming it with another
provider or model is refused (answers of two providers would sit side by side in one batch), unless
`new_version` starts `NAME.v2` or `allow_mixed` says to mix them.

The documents come from a path (a folder, a JSONL or a CSV) or, in Python, from an iterable of texts
or records (dicts with `id` and `text` or `path`, and an optional `label`).

Memory stays flat: records are read one at a time, written in chunks, and at most
`max_in_flight` runs are sent and unfinished at any moment. The batch lane has no such bound (its
results take hours); with a budget it releases runs while the recorded spend plus the upper-bound
estimate of what is in flight stays within it.

The package: `spec` (the batch row and its input), `estimate` (its cost bound), `submit` (the stream of runs,
the lane's release, waiting, retrying), `cancel`. Every name is re-exported here."""

from __future__ import annotations

from chorus.batch.cancel import Cancellation, cancel
from chorus.batch.estimate import estimate_batch
from chorus.batch.spec import (
    CHUNK,
    LANES,
    Answerer,
    BatchSpec,
    Prepared,
    Source,
    answerers_of,
    batch_items,
    check_batch,
    check_lane,
    default_name,
    find_batch,
    item_records,
    items_name,
    make_spec,
    open_batch,
    prepare_batch,
    with_provider,
)
from chorus.batch.submit import (
    DISPATCH_GROUP,
    LANE_WAIT_S,
    POLL_S,
    Counts,
    Submission,
    Submitter,
    batch_counts,
    lane_status,
    retry_failed,
    run_batch,
    wait_for_batch,
)

__all__ = [
    "Answerer", "BatchSpec", "CHUNK", "Cancellation", "Counts", "DISPATCH_GROUP", "LANES", "LANE_WAIT_S",
    "POLL_S", "Prepared", "Source", "Submission", "Submitter", "answerers_of", "batch_counts", "batch_items",
    "cancel", "check_batch", "check_lane", "default_name", "estimate_batch", "find_batch", "item_records",
    "items_name", "lane_status", "make_spec", "open_batch", "prepare_batch", "retry_failed", "run_batch",
    "wait_for_batch", "with_provider",
]
