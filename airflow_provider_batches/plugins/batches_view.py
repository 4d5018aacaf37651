"""The Airflow plugin that puts the Batches view in the UI (Airflow 3.1+): a nav entry and a task
instance tab, both served by the FastAPI app in :mod:`.app`.

Every Airflow process imports plugins (scheduler, workers, triggerer), but only the API server
serves this one: the app is built on its first request, so the others never import FastAPI for it.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

#: Where the API server mounts the app; the UI's links are relative to its base URL (no leading slash).
URL_PREFIX = "/anthropic-batches"
PLUGIN_NAME = "anthropic_batches"


class _LazyApp:
    """An ASGI app that builds the view's FastAPI app on its first request."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_provider_batches.plugins.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return "airflow_provider_batches.plugins.app:create_app"


class AnthropicBatchesPlugin(AirflowPlugin):
    """The Batches page (nav, under Browse) and the job of one task instance (a tab on its page)."""

    name = PLUGIN_NAME
    fastapi_apps = [{"app": _LazyApp(), "url_prefix": URL_PREFIX, "name": "Anthropic Batches"}]
    external_views = [
        {
            "name": "Batches",
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "anthropic-batches",
        },
        {
            "name": "Batch job",
            "href": f"{URL_PREFIX.lstrip('/')}/job?dag_id={{DAG_ID}}&run_id={{RUN_ID}}"
            "&task_id={TASK_ID}&map_index={MAP_INDEX}",
            "destination": "task_instance",
            "url_route": "anthropic-batch-job",
        },
    ]
