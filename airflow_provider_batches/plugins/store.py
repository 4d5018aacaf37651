"""Reads the jobs of the DAGs a user may see from Airflow's metadata database (the API server's).

Where a job's record lives depends on the Airflow that ran it (see :mod:`..job_state`):
the ``task_state_store`` table (3.3+) or an Airflow Variable named after the task instance (3.1-3.2).
Both are read, so jobs recorded before an upgrade stay visible. The manifests come from the
``return_value`` XComs of the same DAG runs, recognised by their shape, since a DAG may use a
subclass of any of the provider's operators. Only the DAG ids passed in are ever queried: the
caller decides them with Airflow's auth manager.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from airflow_provider_batches.job_state import RECORD_KEY, RECORD_RETENTION, variable_key
from airflow_provider_batches.plugins.jobs import JobSource, TaskKey

VARIABLE_PREFIX = f"{RECORD_KEY}__"
#: The task instance digest that starts a record name since the names became unambiguous.
_DIGEST = re.compile(r"[0-9a-f]{16}__")
RETURN_VALUE = "return_value"


def _json(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _task_state_records(
    session: Session, dag_ids: Collection[str], since: datetime, limit: int
) -> Iterator[tuple[TaskKey, Any, str]]:
    try:
        from airflow.models.task_state_store import TaskStateStoreModel
    except ImportError:  # Airflow < 3.3: no task_state_store
        return
    model = TaskStateStoreModel
    rows = session.execute(
        select(model.dag_id, model.run_id, model.task_id, model.map_index, model.value)
        .where(model.key == RECORD_KEY, model.dag_id.in_(dag_ids), model.updated_at >= since)
        .order_by(model.updated_at.desc())
        .limit(limit)
    )
    for dag_id, run_id, task_id, map_index, value in rows:
        yield TaskKey(dag_id, run_id, task_id, map_index), _json(value), "task_state_store"


def _splits(text: str) -> Iterator[tuple[str, str]]:
    """Every way to cut ``text`` in two at a ``__``."""
    start = text.find("__")
    while start > 0:
        yield text[:start], text[start + 2 :]
        start = text.find("__", start + 1)


def _current_name(name: str) -> re.Match[str] | None:
    """The digest that starts a record name written since names became unambiguous, or None (legacy)."""
    return _DIGEST.match(name.removeprefix(VARIABLE_PREFIX))


def read_variable_name(name: str, dag_ids: Collection[str]) -> list[TaskKey]:
    """Every task instance a record Variable's name can denote, in the given DAGs only.

    The name is ``<prefix><digest>__<dag_id>__<run_id>__<task_id>__<map_index>`` (``job_state.
    variable_key``: only the reading whose digest matches is kept) or, written by older versions,
    the same without the digest; the ids may hold ``__`` too, so a legacy name can have several
    readings: the caller keeps the one that names a task instance.
    """
    digest = _current_name(name)
    head, _, index = name.removeprefix(VARIABLE_PREFIX)[digest.end() if digest else 0 :].rpartition("__")
    try:
        map_index = int(index)
    except ValueError:
        return []
    readings = [
        TaskKey(dag_id, run_id, task_id, map_index)
        for dag_id, rest in _splits(head)
        if dag_id in dag_ids
        for run_id, task_id in _splits(rest)
    ]
    if digest:
        readings = [
            key
            for key in readings
            if variable_key(key.dag_id, key.run_id, key.task_id, key.map_index) == name
        ]
    return readings


def _variable_records(
    session: Session, dag_ids: Collection[str], since: datetime, known: set[TaskKey]
) -> Iterator[tuple[TaskKey, Any, str]]:
    """The Variable fallback's records (one query for all of them), their names read back into
    task instance keys: the reading that names an existing task instance wins."""
    from airflow.models import Variable
    from airflow.models.taskinstance import TaskInstance

    allowed = set(dag_ids)
    candidates: dict[TaskKey, Any] = {}
    names = select(Variable).where(Variable.key.startswith(VARIABLE_PREFIX, autoescape=True))
    for variable in session.scalars(names):
        keys = read_variable_name(variable.key, allowed)
        if not keys:
            continue
        record = _json(variable.val)
        saved = _saved_at(record)
        if saved is not None and saved < since:
            continue
        for key in keys:
            if key not in candidates or _current_name(variable.key):
                candidates[key] = record  # the current name wins over a legacy one
    if not candidates:
        return
    ti = TaskInstance
    existing = {
        TaskKey(*row)
        for row in session.execute(
            select(ti.dag_id, ti.run_id, ti.task_id, ti.map_index).where(
                ti.dag_id.in_({key.dag_id for key in candidates}),
                ti.run_id.in_({key.run_id for key in candidates}),
            )
        )
    }
    for key, record in candidates.items():
        if key in existing and key not in known:
            yield key, record, "Variable"


def _saved_at(record: Any) -> datetime | None:
    """When a record was last saved: its expiry less the retention it was stamped with."""
    expires = record.get("expires_at") if isinstance(record, Mapping) else None
    try:
        return datetime.fromisoformat(expires) - RECORD_RETENTION if isinstance(expires, str) else None
    except ValueError:
        return None


def read_jobs(
    session: Session,
    dag_ids: Collection[str],
    *,
    since: datetime,
    limit: int = 200,
    only: TaskKey | None = None,
) -> list[JobSource]:
    """The jobs of ``dag_ids`` recorded since ``since`` (newest first, at most ``limit``), with the
    task instance's state and the manifests of their DAG runs; ``only`` narrows to one task instance."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    if only is not None:
        dag_ids = [only.dag_id] if only.dag_id in dag_ids else []
    if not dag_ids:
        return []
    found = {
        key: (record, store) for key, record, store in _task_state_records(session, dag_ids, since, limit)
    }
    for key, record, store in _variable_records(session, dag_ids, since, set(found)):
        found.setdefault(key, (record, store))
    if only is not None:
        found = {key: value for key, value in found.items() if key == only}
    if not found:
        return []
    runs = {(key.dag_id, key.run_id) for key in found}
    dag_filter = {dag_id for dag_id, _ in runs}
    run_filter = {run_id for _, run_id in runs}

    ti = TaskInstance
    instances = {
        TaskKey(row.dag_id, row.run_id, row.task_id, row.map_index): row
        for row in session.execute(
            select(
                ti.dag_id,
                ti.run_id,
                ti.task_id,
                ti.map_index,
                ti.state,
                ti.start_date,
                ti.end_date,
                ti.try_number,
                ti.operator,
                ti.custom_operator_name,
            ).where(ti.dag_id.in_(dag_filter), ti.run_id.in_(run_filter))
        )
        if (row.dag_id, row.run_id) in runs
    }
    xcom = XComModel
    outputs: dict[TaskKey, Any] = {}
    for output in session.execute(
        select(xcom.dag_id, xcom.run_id, xcom.task_id, xcom.map_index, xcom.value).where(
            xcom.dag_id.in_(dag_filter), xcom.run_id.in_(run_filter), xcom.key == RETURN_VALUE
        )
    ):
        if (output.dag_id, output.run_id) in runs:
            outputs[TaskKey(output.dag_id, output.run_id, output.task_id, output.map_index)] = _json(
                XComModel.deserialize_value(output)
            )

    jobs = []
    for key, (record, store) in found.items():
        row = instances.get(key)
        same_run = [
            value
            for other, value in outputs.items()
            if (other.dag_id, other.run_id) == (key.dag_id, key.run_id)
        ]
        create = outputs.get(key)
        jobs.append(
            JobSource(
                key=key,
                record=record,
                store=store,
                ti_state=str(row.state) if row is not None and row.state is not None else None,
                start_date=row.start_date if row is not None else None,
                end_date=row.end_date if row is not None else None,
                try_number=row.try_number if row is not None else None,
                operator=(row.custom_operator_name or row.operator) if row is not None else None,
                create_manifest=create if isinstance(create, Mapping) else None,
                transfer_manifests=[value for value in same_run if _is_transfer_manifest(value)],
                estimates=[value for value in same_run if _is_token_count(value)],
            )
        )
    jobs.sort(key=lambda job: job.start_date.isoformat() if job.start_date else "", reverse=True)
    return jobs[:limit]


def _is_transfer_manifest(value: Any) -> bool:
    return isinstance(value, Mapping) and "manifest_version" in value and "batch_ids" in value


def _is_token_count(value: Any) -> bool:
    return isinstance(value, Mapping) and "input_tokens" in value and "estimated_cost_usd" in value
