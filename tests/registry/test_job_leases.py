"""JobStore leases on SQLite and PostgreSQL: a job is owned and leased from its creation, renewed
by heartbeat, taken over only once its lease lapsed, claimed by exactly one replica, and its
result committed with its version only while its owner still holds it. Leases that must have
lapsed are made with a negative length: nothing here waits for the clock."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from app.errors import JobNotHeld
from app.registry.job_store import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobClaim,
    JobCompletion,
    JobStore,
    NewJob,
    parse_owner,
)
from tests.registry.conftest import artifact_files, count_rows

A, B = "host-a|101|2026-12-03T09:00:00+00:00", "host-b|202|2026-12-03T09:00:01+00:00"


def new_job(**overrides) -> NewJob:
    values = {
        "kind": "training",
        "model_name": "line-7",
        "algorithm": "kmeans",
        "total": 1,
        "request": {"name": "line-7"},
        "spec": {"name": "line-7", "algorithm": "kmeans"},
        "input_path": "jobs/x.npy",
        "input_sha256": "0" * 64,
    } | overrides
    return NewJob(**values)


@pytest.fixture
def jobs(engine) -> JobStore:
    return JobStore(engine)


def test_a_job_is_owned_and_leased_from_its_creation(jobs):
    job = jobs.create(new_job(), owner=A, lease_seconds=30)
    assert (job.status, job.owner, job.attempts) == (QUEUED, A, 1)
    assert job.lease_expires_at > datetime.now(UTC)
    assert parse_owner(job.owner) == {
        "id": A,
        "host": "host-a",
        "pid": 101,
        "started_at": "2026-12-03T09:00:00+00:00",
    }
    assert jobs.mark_running(job.id, owner=B) is False  # not B's
    assert jobs.mark_running(job.id, owner=A) is True
    assert jobs.get(job.id).status == RUNNING


def test_the_heartbeat_renews_the_owners_leases_and_reads_back_cancellations(jobs):
    mine = jobs.create(new_job(), owner=A, lease_seconds=30)
    other = jobs.create(new_job(), owner=A, lease_seconds=30)
    theirs = jobs.create(new_job(), owner=B, lease_seconds=30)
    before = jobs.get(mine.id).lease_expires_at
    jobs.request_cancel(other.id)
    held = jobs.heartbeat(A, [mine.id, other.id, theirs.id], lease_seconds=60)
    assert held == {mine.id: False, other.id: True}
    assert jobs.get(mine.id).lease_expires_at > before
    assert jobs.get(theirs.id).lease_expires_at == theirs.lease_expires_at
    assert jobs.heartbeat(A, [], lease_seconds=60) == {}


def test_only_lapsed_leases_are_recovered_and_each_job_the_right_way(jobs):
    live = jobs.create(new_job(), owner=A, lease_seconds=30)
    retry = jobs.create(new_job(), owner=A, lease_seconds=-1)
    once = jobs.create(new_job(retryable=False, input_path=None), owner=A, lease_seconds=-1)
    cancel = jobs.create(new_job(), owner=A, lease_seconds=-1)
    jobs.request_cancel(cancel.id)
    rowless = jobs.create(new_job(input_path=None), owner=A, lease_seconds=-1)
    jobs.mark_running(retry.id, owner=A)
    jobs.progress(retry.id, 1, owner=A)

    recovered = {r.job.id: r for r in jobs.recover_expired(max_attempts=3)}
    assert set(recovered) == {retry.id, once.id, cancel.id, rowless.id}
    assert jobs.get(live.id).owner == A  # a live owner's job is never touched

    again = jobs.get(retry.id)
    assert (again.status, again.owner, again.lease_expires_at) == (QUEUED, None, None)
    assert (again.started_at, again.progress_done, again.attempts) == (None, 0, 1)
    failed = jobs.get(once.id)
    assert failed.status == FAILED and failed.error["code"] == "interrupted"
    assert "host-a" in failed.error["detail"] and "not retryable" in failed.error["detail"]
    assert jobs.get(cancel.id).status == CANCELLED
    assert "rows were not kept" in jobs.get(rowless.id).error["detail"]
    assert jobs.recover_expired(max_attempts=3) == []


def test_a_job_tried_as_often_as_allowed_fails_with_that_reason(jobs):
    job = jobs.create(new_job(), owner=A, lease_seconds=-1)
    for attempt in (2, 3):
        [recovered] = jobs.recover_expired(max_attempts=3)
        assert recovered.status == QUEUED
        [claimed] = jobs.claim(B, lease_seconds=-1, limit=5)
        assert (claimed.id, claimed.attempts, claimed.owner) == (job.id, attempt, B)
    [recovered] = jobs.recover_expired(max_attempts=3)
    assert recovered.status == FAILED
    assert "tried 3 time(s)" in jobs.get(job.id).error["detail"]
    assert "LLOYD_JOB_MAX_ATTEMPTS" in jobs.get(job.id).error["detail"]


def test_replicas_claiming_at_once_each_take_a_job_exactly_once(jobs):
    ids = []
    for _ in range(30):
        job = jobs.create(new_job(), owner=A, lease_seconds=-1)
        ids.append(job.id)
    assert len(jobs.recover_expired(max_attempts=3)) == 30
    start = threading.Barrier(4)

    def claim(owner: str) -> list[str]:
        start.wait()
        got: list[str] = []
        while batch := jobs.claim(owner, lease_seconds=30, limit=3):
            got += [job.id for job in batch]
        return got

    owners = [f"replica-{i}|{i}|t" for i in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        claimed = list(pool.map(claim, owners))
    everything = [job_id for got in claimed for job_id in got]
    assert sorted(everything) == sorted(ids)  # each exactly once
    for owner, got in zip(owners, claimed, strict=True):
        assert all(jobs.get(job_id).owner == owner for job_id in got)


def test_a_cancelled_queued_job_is_not_claimed_and_an_orphan_is_cancelled_directly(jobs):
    job = jobs.create(new_job(), owner=A, lease_seconds=30)
    error = {"code": "job_cancelled", "status": 409, "detail": "cancelled by a client"}
    assert jobs.cancel_orphan(job.id, error) is False  # A holds it: only A may end it
    lapsed = jobs.create(new_job(), owner=A, lease_seconds=-1)
    assert jobs.cancel_orphan(lapsed.id, error) is True
    assert jobs.get(lapsed.id).status == CANCELLED


def test_a_result_commits_only_while_its_owner_holds_the_job(jobs):
    job = jobs.create(new_job(), owner=A, lease_seconds=30)
    with pytest.raises(JobNotHeld):
        jobs.complete(JobClaim(job.id, B), {"model": "line-7", "version": 1})
    jobs.request_cancel(job.id)
    with pytest.raises(JobNotHeld):
        jobs.complete(JobClaim(job.id, A), {"model": "line-7", "version": 1})
    assert jobs.get(job.id).status == QUEUED

    held = jobs.create(new_job(), owner=A, lease_seconds=30)
    jobs.complete(JobClaim(held.id, A), {"model": "line-7", "version": 1})
    done = jobs.get(held.id)
    assert (done.status, done.result, done.lease_expires_at) == (
        SUCCEEDED,
        {"model": "line-7", "version": 1},
        None,
    )
    assert done.owner == A  # who ran it stays known


def test_a_job_handed_back_at_shutdown_is_queued_when_it_can_run_again(jobs):
    retry = jobs.create(new_job(), owner=A, lease_seconds=30)
    once = jobs.create(new_job(retryable=False, input_path=None), owner=A, lease_seconds=30)
    error = {"code": "interrupted", "status": 500, "detail": "interrupted by shutdown"}
    assert jobs.release(retry.id, owner=A, error=error) == QUEUED
    assert jobs.release(once.id, owner=A, error=error) == FAILED
    assert jobs.get(retry.id).attempts == 0  # a shutdown is not the job's failure
    [claimed] = jobs.claim(B, lease_seconds=30, limit=5)
    assert (claimed.id, claimed.attempts) == (retry.id, 1)


def test_a_version_is_registered_in_the_transaction_that_completes_its_job(
    engine, registry, trained
):
    jobs = JobStore(engine)
    model = trained()
    job = jobs.create(new_job(), owner=A, lease_seconds=30)
    version = registry.register(
        "line-7",
        model.new,
        model.model,
        completes=JobCompletion(
            JobClaim(job.id, A), lambda v: {"model": v.name, "version": v.version}
        ),
    )
    assert jobs.get(job.id).result == {"model": "line-7", "version": version.version}

    cancelled = jobs.create(new_job(), owner=A, lease_seconds=30)
    jobs.request_cancel(cancelled.id)
    with pytest.raises(JobNotHeld):
        registry.register(
            "line-7",
            model.new,
            model.model,
            completes=JobCompletion(JobClaim(cancelled.id, A), lambda v: {}),
        )
    # Neither the version nor its artifact: the transaction rolled back, the file was removed.
    assert count_rows(engine, "model_versions") == 1
    assert len([p for p in artifact_files(registry) if p.suffix == ".joblib"]) == 1
    assert jobs.get(cancelled.id).status == QUEUED
