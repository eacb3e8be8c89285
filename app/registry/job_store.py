"""JobStore: the jobs table. Every job has an owner (the replica running it) holding a lease it
renews; every change of state is a conditional update, so a job runs once and finishes once."""

from __future__ import annotations

import builtins
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, overload

import psutil
from sqlalchemy import ColumnElement, Connection, Engine, false, func, or_, select, update
from sqlalchemy.orm import Session

from app.errors import JobNotHeld, NotFound
from app.registry.database import WRITE, is_postgresql
from app.registry.notifications import JOBS, Notifications
from app.registry.orm import JobRow

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
UNFINISHED = (QUEUED, RUNNING)
# Offsets are 64-bit in the database: a larger one names nothing, and must not reach it.
MAX_OFFSET = 2**63 - 1


class JobNotFound(NotFound):
    code, title = "job_not_found", "Job not found"


def replica_id() -> str:
    """This process as a job owner: ``host|pid|start``. The start time tells a restarted
    process from the one it replaces, should the pid come round again."""
    started = datetime.now(UTC).isoformat(timespec="microseconds")
    owner = f"{socket.gethostname()}|{os.getpid()}|{started}"
    OWNER_OF_THIS_PROCESS[os.getpid()] = owner
    return owner


def owner_is_gone(owner: str) -> bool:
    """Whether ``owner`` is known to be dead: a process of this host whose pid runs no more,
    or now runs a process started after the owner was (the pid came round again, as it does
    for PID 1 in a restarted container). An owner on another host is never known dead: only
    its lease tells."""
    parsed = parse_owner(owner)
    assert parsed is not None
    if parsed["host"] != socket.gethostname() or parsed["pid"] is None:
        return False
    if owner == OWNER_OF_THIS_PROCESS.get(parsed["pid"]):
        return False
    try:
        created = psutil.Process(parsed["pid"]).create_time()
    except psutil.NoSuchProcess:
        return True
    started = datetime.fromisoformat(parsed["started_at"]).timestamp()
    return created > started


# The owner ids this process handed out (one per runner), so that none counts as gone.
OWNER_OF_THIS_PROCESS: dict[int, str] = {}


def parse_owner(owner: str | None) -> dict[str, Any] | None:
    """An owner id as ``{"id", "host", "pid", "started_at"}`` (None for no owner)."""
    if owner is None:
        return None
    host, _, rest = owner.partition("|")
    pid, _, started = rest.partition("|")
    return {
        "id": owner,
        "host": host,
        "pid": int(pid) if pid.isdigit() else None,
        "started_at": started or None,
    }


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    status: str
    model_name: str | None
    algorithm: str
    progress_done: int
    progress_total: int
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: str | None = None
    lease_expires_at: datetime | None = None
    attempts: int = 0
    retryable: bool = True
    cancel_requested: bool = False
    spec: dict[str, Any] | None = None
    input_path: str | None = None
    input_sha256: str | None = None

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED


@dataclass(frozen=True)
class JobClaim:
    """What a job's last step needs to commit its result: the job, and the replica that must
    still hold it (the row running, owned by it, no cancellation asked) when it commits."""

    job_id: str
    owner: str


@dataclass(frozen=True)
class JobCompletion:
    """A job completed by the transaction that commits its product (a version): the claim
    that must still hold, and the job's result document, made from that product."""

    claim: JobClaim
    result: Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class NewJob:
    """What a job is, as its creator knows it."""

    kind: str
    model_name: str | None
    algorithm: str
    total: int
    request: dict[str, Any]
    spec: dict[str, Any] | None = None
    input_path: str | None = None
    input_sha256: str | None = None
    retryable: bool = True


@dataclass(frozen=True)
class Recovered:
    """A job whose owner's lease expired, and what became of it (re-queued or ended)."""

    job: JobRecord
    status: str


@overload
def _utc(moment: datetime) -> datetime: ...
@overload
def _utc(moment: datetime | None) -> datetime | None: ...
def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _record(row: JobRow) -> JobRecord:
    return JobRecord(
        id=row.id,
        kind=row.kind,
        status=row.status,
        model_name=row.model_name,
        algorithm=row.algorithm,
        progress_done=row.progress_done,
        progress_total=row.progress_total,
        request=row.request,
        result=row.result,
        error=row.error,
        created_at=_utc(row.created_at),
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
        owner=row.owner,
        lease_expires_at=_utc(row.lease_expires_at),
        attempts=row.attempts,
        retryable=row.retryable,
        cancel_requested=row.cancel_requested,
        spec=row.spec,
        input_path=row.input_path,
        input_sha256=row.input_sha256,
    )


def complete_job_in(session: Session, claim: JobClaim, result: dict[str, Any]) -> None:
    """Within ``session``'s transaction (the one that commits the job's product): mark the job
    succeeded, or raise JobNotHeld when its row no longer says ``claim.owner`` runs it
    uncancelled. The row stays locked until that transaction ends."""
    row = session.get(JobRow, claim.job_id, with_for_update=True, populate_existing=True)
    if row is None or row.owner != claim.owner or row.status not in UNFINISHED:
        raise JobNotHeld(f"job {claim.job_id} is no longer run by this replica")
    if row.cancel_requested:
        raise JobNotHeld(f"job {claim.job_id} was cancelled")
    row.status, row.result, row.error = SUCCEEDED, result, None
    row.finished_at, row.lease_expires_at = datetime.now(UTC), None
    row.progress_done = row.progress_total


def interrupted(detail: str) -> dict[str, Any]:
    return {"code": "interrupted", "status": 500, "detail": detail}


class JobStore:
    def __init__(self, engine: Engine, notifications: Notifications | None = None) -> None:
        self.engine = engine
        # Other replicas hear at once of a job queued for them or asked to cancel (else at
        # their next heartbeat).
        self.notifications = notifications
        self._write_engine = engine.execution_options(**WRITE)
        # Leases are compared across hosts: on PostgreSQL they are reckoned by the database's
        # clock, so that no two replicas' clocks need agree. SQLite lives on one host.
        self._database_clock = is_postgresql(engine)

    # -- clock ---------------------------------------------------------------------------------
    def _now(self) -> Any:
        """Now, as a value or SQL expression a query compares or stores."""
        return func.now() if self._database_clock else datetime.now(UTC)

    def _in(self, seconds: float) -> Any:
        """``seconds`` from now, as a value or SQL expression a query compares or stores."""
        return self._now() + timedelta(seconds=seconds)

    def _expired(self) -> ColumnElement[bool]:
        expired: ColumnElement[bool] = JobRow.lease_expires_at < self._now()
        return expired

    # -- reads ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        with Session(self.engine) as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            return _record(row)

    def list(
        self,
        *,
        status: str | None,
        kind: str | None,
        model_name: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[JobRecord], int]:
        query = select(JobRow)
        if status:
            query = query.where(JobRow.status == status)
        if kind:
            query = query.where(JobRow.kind == kind)
        if model_name:
            query = query.where(JobRow.model_name == model_name)
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(query.subquery()))
            rows = session.scalars(
                query.order_by(JobRow.created_at.desc(), JobRow.id)
                .offset(min(offset, MAX_OFFSET))
                .limit(limit)
            ).all()
            return [_record(r) for r in rows], int(total or 0)

    def live_owners(self) -> set[str]:
        """The owners holding an unexpired lease on an unfinished job, less those known dead
        (``owner_is_gone``): replicas that may be about to commit an artifact."""
        with Session(self.engine) as session:
            owners = session.scalars(
                select(JobRow.owner)
                .where(JobRow.status.in_(UNFINISHED), JobRow.owner.is_not(None), ~self._expired())
                .distinct()
            )
            return {owner for owner in owners if owner and not owner_is_gone(owner)}

    def input_paths(self, *, unfinished_only: bool) -> set[str]:
        """The store paths of jobs' saved rows (of unfinished jobs only, or of every job)."""
        query = select(JobRow.input_path).where(JobRow.input_path.is_not(None))
        if unfinished_only:
            query = query.where(JobRow.status.in_(UNFINISHED))
        with Session(self.engine) as session:
            return {path for path in session.scalars(query) if path}

    # -- writes by the owner -------------------------------------------------------------------
    def create(self, new: NewJob, *, owner: str, lease_seconds: float) -> JobRecord:
        """A new job, queued and owned by ``owner`` from the start: its creator runs it."""
        now = datetime.now(UTC)
        row = JobRow(
            id=str(uuid.uuid4()),
            kind=new.kind,
            status=QUEUED,
            model_name=new.model_name,
            algorithm=new.algorithm,
            progress_done=0,
            progress_total=new.total,
            request=new.request,
            created_at=now,
            owner=owner,
            attempts=1,
            retryable=new.retryable,
            cancel_requested=False,
            spec=new.spec,
            input_path=new.input_path,
            input_sha256=new.input_sha256,
            lease_expires_at=self._in(lease_seconds),
        )
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            session.add(row)
            session.flush()
            session.refresh(row)  # the lease, as the database reckoned it
        return _record(row)

    def _update(
        self, job_id: str, only_if: tuple[str, ...], owner: str | None, **values: Any
    ) -> bool:
        query = update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(only_if))
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        with self._write_engine.begin() as connection:
            result = connection.execute(query.values(**values))
            return result.rowcount == 1

    def mark_running(self, job_id: str, *, owner: str | None = None) -> bool:
        return self._update(job_id, (QUEUED,), owner, status=RUNNING, started_at=datetime.now(UTC))

    def progress(self, job_id: str, done: int, *, owner: str | None = None) -> None:
        self._update(job_id, UNFINISHED, owner, progress_done=done)

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> bool:
        """Move an unfinished job to ``status`` (only while ``owner`` holds it, when given);
        False when it had already finished or is not this owner's."""
        return self._update(
            job_id,
            UNFINISHED,
            owner,
            status=status,
            result=result,
            error=error,
            finished_at=datetime.now(UTC),
            lease_expires_at=None,
        )

    def release(self, job_id: str, *, owner: str, error: dict[str, Any] | None) -> str:
        """Hand back a job this owner stops without finishing it (at shutdown): queued for
        any replica when it can run again from its saved rows, else failed with ``error``.
        The attempt is not counted: the job did not fail. Returns the job's new status."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.owner != owner or row.status not in UNFINISHED:
                return row.status if row is not None else FAILED
            if row.retryable and row.spec is not None and row.input_path is not None:
                row.status, row.started_at, row.progress_done = QUEUED, None, 0
                row.attempts = max(0, row.attempts - 1)
            else:
                row.status, row.error, row.finished_at = FAILED, error, datetime.now(UTC)
            row.owner, row.lease_expires_at = None, None
            self._announce(session)
            return row.status

    def complete(self, claim: JobClaim, result: dict[str, Any]) -> None:
        """Mark the job succeeded with ``result`` (JobNotHeld unless ``claim`` holds)."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            complete_job_in(session, claim, result)

    def heartbeat(
        self, owner: str, job_ids: builtins.list[str], lease_seconds: float
    ) -> dict[str, bool]:
        """Renew ``owner``'s lease on its unfinished ``job_ids``: each one it still holds,
        with whether a cancellation was asked for. A job missing from the answer is no longer
        this owner's (it finished, or another replica took it over after the lease lapsed)."""
        if not job_ids:
            return {}
        with self._write_engine.begin() as connection:
            held = JobRow.id.in_(job_ids), JobRow.owner == owner, JobRow.status.in_(UNFINISHED)
            connection.execute(
                update(JobRow).where(*held).values(lease_expires_at=self._in(lease_seconds))
            )
            rows = connection.execute(select(JobRow.id, JobRow.cancel_requested).where(*held))
            return {job_id: bool(cancel) for job_id, cancel in rows}

    # -- writes by anyone ----------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> JobRecord:
        """Ask whoever runs the job to cancel it (it sees this at its next heartbeat)."""
        with self._write_engine.begin() as connection:
            connection.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status.in_(UNFINISHED))
                .values(cancel_requested=True)
            )
            self._announce(connection)
        return self.get(job_id)

    def _announce(self, where: Session | Connection) -> None:
        if self.notifications is not None:
            self.notifications.send(where, JOBS)

    def cancel_orphan(self, job_id: str, error: dict[str, Any]) -> bool:
        """Cancel a job that nobody runs: queued with no owner, or whose owner's lease lapsed."""
        with self._write_engine.begin() as connection:
            result = connection.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.status.in_(UNFINISHED),
                    or_(JobRow.owner.is_(None), self._expired()),
                )
                .values(
                    status=CANCELLED,
                    error=error,
                    finished_at=datetime.now(UTC),
                    lease_expires_at=None,
                )
            )
            return result.rowcount == 1

    def _locked(
        self, session: Session, *conditions: ColumnElement[bool], limit: int
    ) -> builtins.list[JobRow]:
        query = select(JobRow).where(*conditions).order_by(JobRow.created_at).limit(limit)
        if self._database_clock:
            # Rows another replica is claiming or recovering right now are skipped, not waited
            # for: each job goes to exactly one of them.
            query = query.with_for_update(skip_locked=True)
        return list(session.scalars(query))

    def recover_expired(self, *, max_attempts: int, limit: int = 100) -> builtins.list[Recovered]:
        """Jobs whose owner stopped renewing its lease: re-queued for any replica to claim,
        or ended when they cannot run again (cancelled, not retryable, out of attempts, rows
        not saved). Touches no job a live owner holds."""
        expired = (
            JobRow.status.in_(UNFINISHED),
            JobRow.owner.is_not(None),
            self._expired(),
        )
        with Session(self.engine) as session:  # a cheap look first: usually there are none
            if session.scalar(select(func.count()).select_from(JobRow).where(*expired)) == 0:
                return []
        out: list[Recovered] = []
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            for row in self._locked(session, *expired, limit=limit):
                status, error = self._after_owner_lost(row, max_attempts)
                row.owner = None
                row.lease_expires_at = None
                if status == QUEUED:
                    row.status, row.started_at, row.progress_done = QUEUED, None, 0
                else:
                    row.status, row.error = status, error
                    row.finished_at = datetime.now(UTC)
                out.append(Recovered(_record(row), status))
            if any(r.status == QUEUED for r in out):
                self._announce(session)
        return out

    @staticmethod
    def _after_owner_lost(row: JobRow, max_attempts: int) -> tuple[str, dict[str, Any] | None]:
        # Only owned rows are recovered (the query asks for an owner): "unknown" never shows.
        owner = parse_owner(row.owner)
        host = owner["host"] if owner is not None else "unknown"
        where = f"its replica ({host}) stopped renewing its lease"
        if row.cancel_requested:
            return CANCELLED, {
                "code": "job_cancelled",
                "status": 409,
                "detail": "cancelled by a client",
            }
        if not row.retryable:
            return FAILED, interrupted(f"interrupted: {where}, and the job is not retryable")
        if row.attempts >= max_attempts:
            return FAILED, interrupted(
                f"interrupted: {where}; it was tried {row.attempts} time(s), the most "
                f"LLOYD_JOB_MAX_ATTEMPTS allows"
            )
        if row.spec is None or row.input_path is None:
            return FAILED, interrupted(f"interrupted: {where}, and its rows were not kept")
        return QUEUED, None

    def claim(self, owner: str, *, lease_seconds: float, limit: int) -> builtins.list[JobRecord]:
        """Up to ``limit`` queued jobs nobody owns, now ``owner``'s (oldest first)."""
        if limit <= 0:
            return []
        claimable = (
            JobRow.status == QUEUED,
            JobRow.owner.is_(None),
            JobRow.cancel_requested == false(),
        )
        with Session(self.engine) as session:
            if session.scalar(select(func.count()).select_from(JobRow).where(*claimable)) == 0:
                return []
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            rows = self._locked(session, *claimable, limit=limit)
            for row in rows:
                row.owner = owner
                row.attempts += 1
                row.lease_expires_at = self._in(lease_seconds)
            session.flush()
            for row in rows:
                session.refresh(row)
            return [_record(row) for row in rows]
