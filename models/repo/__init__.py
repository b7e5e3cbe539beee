"""Reads and writes shared by the tasks and the API: all of chorus's SQL. Every function takes the session it
works in. One module per job; this package re-exports them all, so callers write `repo.create_run(...)`."""

from __future__ import annotations

from models.repo._common import OPEN_OUTCOME, as_utc, content_hash, held_back, is_lane_run
from models.repo.batches import (
    ModelUsage,
    batch_named,
    batch_providers,
    create_batch,
    document_counts,
    documents_by_key,
    documents_page,
    documents_to_retry,
    find_batches,
    insert_batch_chunk,
    latest_runs,
    outcomes_of,
    run_statuses,
    runs_of_batch,
    usage_by_request,
)
from models.repo.cancel import (
    Cancelled,
    batch_cancel_reason,
    cancel_runs,
    open_runs_before,
    open_runs_of_batch,
    set_batch_cancelled,
)
from models.repo.claims import Claim, claim_slot, lease_holder, release_slot, renew_lease
from models.repo.documents import (
    BlobSpec,
    DocumentSpec,
    blob_data,
    files_to_delete,
    keep_blobs,
    mark_file_deleted,
    record_upload,
    uploads,
)
from models.repo.lane import (
    LANE_MARK,
    LANE_ROLES,
    LaneSlot,
    LaneWork,
    OpenProviderBatch,
    adopt_provider_batch,
    cancellable_provider_batches,
    claim_lane_slots,
    known_provider_batches,
    lane_candidates,
    lane_runs_among,
    lane_slots_of,
    lane_work,
    note_provider_batch,
    open_provider_batches,
    open_provider_batches_of_batch,
    record_provider_batch,
    release_lane_claims,
    release_stale_lane_claims,
    runs_of_provider_batch,
    slot_statuses,
    write_lane_result,
)
from models.repo.listing import BatchRow, RunRow, list_batches, list_runs
from models.repo.reaper import (
    Abandoned,
    StalledRun,
    StartedRun,
    drop_resend_marks,
    fail_open_slots,
    finished_among,
    mark_lost_slots,
    outcomes_by_slot,
    run_error,
    run_status,
    stalled_runs,
    start_pending_runs,
    take_abandoned_slots,
)
from models.repo.runs import (
    SlotSpec,
    add_slots,
    count_open_slots,
    create_run,
    find_run,
    finish_run,
    load_run,
    load_run_locked,
    release_slots,
    run_inputs,
    run_progress,
    skip_slots,
    slot_progress,
    update_slot,
)

__all__ = [
    "Abandoned", "BatchRow", "BlobSpec", "Cancelled", "Claim", "DocumentSpec", "LANE_MARK", "LANE_ROLES",
    "LaneSlot", "LaneWork", "ModelUsage", "OPEN_OUTCOME", "OpenProviderBatch", "RunRow", "SlotSpec",
    "StalledRun", "StartedRun", "add_slots", "adopt_provider_batch", "as_utc", "batch_cancel_reason",
    "batch_named", "batch_providers", "blob_data", "cancel_runs", "cancellable_provider_batches",
    "claim_lane_slots", "claim_slot", "content_hash", "count_open_slots", "create_batch", "create_run",
    "document_counts", "documents_by_key", "documents_page", "documents_to_retry", "drop_resend_marks",
    "fail_open_slots", "files_to_delete", "find_batches", "find_run", "finish_run", "finished_among",
    "held_back", "insert_batch_chunk", "is_lane_run", "keep_blobs", "known_provider_batches", "lane_candidates",
    "lane_runs_among", "lane_slots_of", "lane_work", "latest_runs", "lease_holder", "list_batches", "list_runs",
    "load_run", "load_run_locked", "mark_file_deleted", "mark_lost_slots", "note_provider_batch",
    "open_provider_batches", "open_provider_batches_of_batch", "open_runs_before", "open_runs_of_batch",
    "outcomes_by_slot", "outcomes_of", "record_provider_batch", "record_upload", "release_lane_claims",
    "release_slot", "release_slots", "release_stale_lane_claims", "renew_lease", "run_error", "run_inputs",
    "run_progress", "run_status", "run_statuses", "runs_of_batch", "runs_of_provider_batch",
    "set_batch_cancelled", "skip_slots", "slot_progress", "slot_statuses", "stalled_runs", "start_pending_runs",
    "take_abandoned_slots", "update_slot", "uploads", "usage_by_request", "write_lane_result",
]
