"""The plugin as Airflow's plugin manager sees it, in every process that loads plugins."""

from __future__ import annotations

import subprocess
import sys

from airflow_provider_batches.plugins.batches_view import URL_PREFIX, AnthropicBatchesPlugin


def test_loading_the_plugin_does_not_build_or_import_the_app() -> None:
    """Schedulers, workers and triggerers import plugins too: only the API server's first request
    builds the FastAPI app."""
    code = (
        "import sys; import airflow_provider_batches.plugins.batches_view; "
        "print('airflow_provider_batches.plugins.app' in sys.modules, "
        "'airflow_provider_batches.plugins.store' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["False", "False"]


def test_the_ui_links_are_relative_and_the_task_tab_names_the_task_instance() -> None:
    nav, tab = AnthropicBatchesPlugin.external_views
    assert (nav["destination"], tab["destination"]) == ("nav", "task_instance")
    for view in (nav, tab):
        assert not view["href"].startswith("/")  # relative to the UI's base URL
        assert view["href"].startswith(URL_PREFIX.lstrip("/") + "/")
    for placeholder in ("{DAG_ID}", "{RUN_ID}", "{TASK_ID}", "{MAP_INDEX}"):
        assert placeholder in tab["href"]
    (app,) = AnthropicBatchesPlugin.fastapi_apps
    assert app["url_prefix"] == URL_PREFIX
