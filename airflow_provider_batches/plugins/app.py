"""The Batches view's FastAPI app, mounted by the API server: one static page and three JSON endpoints.

Who sees what is Airflow's decision: every data endpoint authenticates the request the way Airflow's
own API does (the JWT in the ``Authorization`` header or the UI's session cookie, through
``airflow.api_fastapi.core_api.security.get_user``) and shows only the jobs of DAGs the auth manager
lets that user read, with their task instances and XComs. Read-only: there is no endpoint that
changes anything. No connection is opened and no key is read: the data is what Airflow already
stores. The page itself is static (it carries no data), so it needs no login to load; it asks for
data and offers Airflow's login when the answer is 401.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from airflow_provider_batches.plugins.jobs import TaskKey, build_job, spend_by_day

STATIC = Path(__file__).parent / "static"
#: The window of the list and the chart, and its bounds.
DEFAULT_DAYS = 28
MAX_DAYS = 90
MAX_JOBS = 200
NO_STORE = {"Cache-Control": "no-store"}


async def current_user(request: Request) -> Any:
    """The signed-in user, exactly as Airflow's public API finds it (401/403 otherwise)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, oauth2_scheme

    return await get_user(request, await oauth2_scheme(request), await bearer_scheme(request))


UserDep = Annotated[Any, Depends(current_user)]


def readable_dag_ids(user: Any) -> set[str]:
    """The DAGs whose runs the user may read, by the configured auth manager."""
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


def may_read_details(user: Any, dag_id: str) -> bool:
    """The view shows task instances and their XComs (the manifests): the user needs both."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    manager = get_auth_manager()
    return all(
        manager.is_authorized_dag(
            method="GET", access_entity=entity, details=DagDetails(id=dag_id), user=user
        )
        for entity in (DagAccessEntity.TASK_INSTANCE, DagAccessEntity.XCOM)
    )


def visible_jobs(user: Any, *, days: int, only: TaskKey | None = None) -> list[dict[str, Any]]:
    from airflow.utils.session import create_session

    from airflow_provider_batches.plugins.store import read_jobs

    dag_ids = readable_dag_ids(user)
    since = datetime.now(timezone.utc) - timedelta(days=days)
    with create_session() as session:
        sources = read_jobs(session, dag_ids, since=since, limit=MAX_JOBS, only=only)
    allowed: dict[str, bool] = {}
    jobs = []
    for source in sources:
        dag_id = source.key.dag_id
        if dag_id not in allowed:
            allowed[dag_id] = may_read_details(user, dag_id)
        if allowed[dag_id]:
            jobs.append(build_job(source))
    return jobs


def _page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=NO_STORE)


def create_app() -> FastAPI:
    app = FastAPI(title="Anthropic Message Batches", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    days_query = Query(DEFAULT_DAYS, ge=1, le=MAX_DAYS)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return _page()

    @app.get("/job", include_in_schema=False)
    def job_page() -> FileResponse:
        return _page()

    @app.get("/api/jobs")
    def jobs(user: UserDep, days: int = days_query) -> JSONResponse:
        found = visible_jobs(user, days=days)
        today = datetime.now(timezone.utc).date()
        body = {"days": days, "jobs": found, "spend": spend_by_day(found, today=today, days=days)}
        return JSONResponse(body, headers=NO_STORE)

    @app.get("/api/job")
    def job(
        user: UserDep,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str = "-1",
    ) -> JSONResponse:
        key = TaskKey(dag_id, run_id, task_id, _map_index(map_index))
        found = visible_jobs(user, days=MAX_DAYS, only=key)
        if not found:  # absent and forbidden look the same: a user learns nothing of DAGs they cannot read
            raise HTTPException(404, "no batch job recorded for this task instance (or not yours to see)")
        return JSONResponse(found[0], headers=NO_STORE)

    return app


def _map_index(value: str) -> int:
    """The task instance view passes ``{MAP_INDEX}`` unreplaced for a task that is not mapped."""
    try:
        return int(value)
    except ValueError:
        return -1
