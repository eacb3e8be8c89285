"""JobStore: the jobs table. Status changes are conditional updates, so a job finishes once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.registry.database import WRITE
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


class JobNotFound(NotFound):
    code, title = "job_not_found", "Job not found"


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

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED


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
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
    )


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(**WRITE)

    def create(
        self,
        *,
        kind: str,
        model_name: str | None,
        algorithm: str,
        total: int,
        request: dict[str, Any],
    ) -> JobRecord:
        row = JobRow(
            id=str(uuid.uuid4()),
            kind=kind,
            status=QUEUED,
            model_name=model_name,
            algorithm=algorithm,
            progress_done=0,
            progress_total=total,
            request=request,
            created_at=datetime.now(UTC),
        )
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            session.add(row)
        return _record(row)

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
                query.order_by(JobRow.created_at.desc(), JobRow.id).offset(offset).limit(limit)
            ).all()
            return [_record(r) for r in rows], int(total or 0)

    def _update(self, job_id: str, only_if: tuple[str, ...], **values: Any) -> bool:
        with self._write_engine.begin() as connection:
            result = connection.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status.in_(only_if))
                .values(**values)
            )
            return result.rowcount == 1

    def mark_running(self, job_id: str) -> bool:
        return self._update(job_id, (QUEUED,), status=RUNNING, started_at=datetime.now(UTC))

    def progress(self, job_id: str, done: int) -> None:
        self._update(job_id, UNFINISHED, progress_done=done)

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Move an unfinished job to ``status``; False when it had already finished."""
        return self._update(
            job_id,
            UNFINISHED,
            status=status,
            result=result,
            error=error,
            finished_at=datetime.now(UTC),
        )

    def fail_unfinished(self, reason: str) -> int:
        """Mark every queued or running job failed (at start-up: their process is gone)."""
        with self._write_engine.begin() as connection:
            result = connection.execute(
                update(JobRow)
                .where(JobRow.status.in_(UNFINISHED))
                .values(
                    status=FAILED,
                    error={"code": "interrupted", "status": 500, "detail": reason},
                    finished_at=datetime.now(UTC),
                )
            )
            return int(result.rowcount or 0)
