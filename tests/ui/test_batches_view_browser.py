"""The Batches view in a real browser: headless Chromium against a real ``airflow api-server``.

Two jobs run first with ``airflow dags test`` against the emulator: the example pipeline (count
tokens, create with re-drive in two rounds, results transfer) and a create-only job in a DAG whose
id and task id contain ``__`` and whose record is moved to the Airflow 3.1-3.2 Variable fallback.
The API server then runs with an auth manager that grants the user ``analyst`` only the pipeline's
DAG. The API key is in the API server's environment too (as a deployment's connection would be):
it must appear in no page and no response. Screenshots land in the test's tmp dir.

Chromium comes from the distribution (``scripts/ci-browser.sh``); where it is missing the test is
skipped, except under CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.job_state import RECORD_KEY, variable_key
from airflow_provider_batches.testing import connection_json
from tests.airflow_harness import AirflowEnv, DagRunOutcome
from tests.api_server import api_server

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("BATCHES_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PIPELINE = "anthropic_batch_pipeline"
HIDDEN_DAG = "finance__private"
HIDDEN_TASK = "create__batch"
USERS = {"admin": "admin-pass-ui26", "analyst": "analyst-pass-ui26", "auditor": "auditor-pass-ui26"}
#: The API key, distinctive so that any copy of it is found.
API_KEY = "sk-ant-api03-ui26BrowserTestKey-DoNotLeak-0123456789"

HIDDEN_DAG_SOURCE = f'''
import pendulum
from airflow.sdk import DAG
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator

with DAG("{HIDDEN_DAG}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    AnthropicCreateBatchOperator(
        task_id="{HIDDEN_TASK}",
        requests=[
            {{"custom_id": f"q{{i}}", "params": {{"model": "claude-haiku-4-5", "max_tokens": 50,
              "messages": [{{"role": "user", "content": f"private question {{i}}"}}]}}}}
            for i in range(5)
        ],
        poll_interval=1,
    )
'''


def _require_browser() -> Any:
    """Playwright's API, or a skip (a failure under CI) naming what is missing."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
        sync_playwright = None
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium at {CHROMIUM} (run scripts/ci-browser.sh as root)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return sync_playwright


def _write_requests(path: Path) -> None:
    """20 requests; with the emulator two fail transiently once (the re-drive's second round)."""
    with path.open("w") as out:
        for index in range(20):
            prompt = f"Explain item {index} in one sentence."
            if index == 3:
                prompt += " [emulator:errored_once=overloaded_error]"
            elif index == 11:
                prompt += " [emulator:expired_once]"
            params = {
                "model": "claude-haiku-4-5",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": prompt}],
            }
            out.write(json.dumps({"custom_id": f"item-{index:03d}", "params": params}) + "\n")


@dataclass
class Deployment:
    url: str
    airflow: AirflowEnv
    pipeline: DagRunOutcome
    hidden: DagRunOutcome
    shots: Path

    def token(self, user: str) -> str:
        answer = httpx.post(f"{self.url}/auth/token", json={"username": user, "password": USERS[user]})
        answer.raise_for_status()
        token: str = answer.json()["access_token"]
        return token


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    _require_browser()
    work = tmp_path_factory.mktemp("batches-view")
    airflow = AirflowEnv(work / "airflow-home")
    airflow.migrate()
    requests_file = work / "requests.jsonl"
    _write_requests(requests_file)
    output = work / "results"
    output.mkdir()
    with Emulator(EmulatorConfig(processing_seconds=2, api_keys=[API_KEY])) as emulator:
        connection = connection_json(emulator)
        conf = {
            "requests_path": f"file://{requests_file}",
            "destination": f"file://{output}/",
            "max_cost_usd": 5.0,
        }
        pipeline = airflow.dags_test(
            PIPELINE,
            ROOT / "example_dags" / f"{PIPELINE}.py",
            conf=conf,
            AIRFLOW_CONN_ANTHROPIC_DEFAULT=connection,
        )
        assert pipeline.state == "success", pipeline.output[-3000:]
        hidden_file = airflow.write_dag(HIDDEN_DAG_SOURCE, name="hidden_dag")
        hidden = airflow.dags_test(HIDDEN_DAG, hidden_file, AIRFLOW_CONN_ANTHROPIC_DEFAULT=connection)
        assert hidden.state == "success", hidden.output[-3000:]
        _move_record_to_variable(airflow, hidden)

        modules = work / "modules"  # the auth manager alone on the server's path (not the checkout)
        modules.mkdir()
        shutil.copy(Path(__file__).with_name("auth_manager.py"), modules / "batches_test_auth_manager.py")
        passwords = work / "passwords.json"
        passwords.write_text(json.dumps(USERS))
        server_env = {
            "AIRFLOW__CORE__AUTH_MANAGER": "batches_test_auth_manager.DagScopedSimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,analyst:viewer,auditor:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": "ui26-test-jwt-secret-not-a-key",
            "BATCHES_TEST_DAG_GRANTS": json.dumps({"analyst": [PIPELINE]}),
            # reads every DAG and its runs, but not their XComs (where the manifests are)
            "BATCHES_TEST_DENIED_ENTITIES": json.dumps({"auditor": ["XCOM"]}),
            "AIRFLOW_CONN_ANTHROPIC_DEFAULT": connection,
            "ANTHROPIC_API_KEY": API_KEY,
            "PYTHONPATH": str(modules),
        }
        with api_server(airflow, work / "api-server.log", **server_env) as url:
            yield Deployment(url, airflow, pipeline, hidden, work / "screenshots")


def _move_record_to_variable(airflow: AirflowEnv, run: DagRunOutcome) -> None:
    """Keep the hidden job's record where Airflow 3.1-3.2 keep it: a Variable named after the task
    (where those Airflows run the test, the operator put it there already)."""
    name = variable_key(HIDDEN_DAG, run.run_id, HIDDEN_TASK, -1)
    if not airflow.query("SELECT name FROM sqlite_master WHERE name = 'task_state_store'"):
        assert airflow.query("SELECT 1 FROM variable WHERE key = ?", name), (
            "no Variable record on Airflow < 3.3"
        )
        return
    rows = airflow.query(
        "SELECT value FROM task_state_store WHERE dag_id = ? AND task_id = ? AND key = ?",
        HIDDEN_DAG,
        HIDDEN_TASK,
        RECORD_KEY,
    )
    assert rows, "the hidden job's record is missing"
    result = airflow.airflow("variables", "set", name, rows[0][0])
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(airflow.db_path) as db:
        db.execute("DELETE FROM task_state_store WHERE dag_id = ?", (HIDDEN_DAG,))


class Browser:
    """One headless Chromium session: a context per user, every response body kept."""

    def __init__(self, sync_playwright: Any) -> None:
        self._manager = sync_playwright()
        playwright = self._manager.__enter__()
        # launch() starts Chromium on a fresh, empty profile (a temporary --user-data-dir) every time.
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        self.bodies: list[tuple[str, bytes]] = []

    def page(self, base_url: str, token: str | None) -> Any:
        context = self.browser.new_context(viewport={"width": 1440, "height": 900})
        if token is not None:
            context.add_cookies([{"name": "_token", "value": token, "url": base_url}])
        page = context.new_page()
        page.on("response", self._keep)
        return page

    def _keep(self, response: Any) -> None:
        try:
            self.bodies.append((response.url, response.body()))
        except Exception:  # redirects and aborted requests have no body
            self.bodies.append((response.url, b""))

    def close(self) -> None:
        self.browser.close()
        self._manager.__exit__(None, None, None)


@pytest.fixture(scope="module")
def browser(deployment: Deployment) -> Iterator[Browser]:
    session = Browser(_require_browser())
    deployment.shots.mkdir(exist_ok=True)
    yield session
    session.close()


def _open_list(deployment: Deployment, browser: Browser, user: str | None, shot: str) -> Any:
    page = browser.page(deployment.url, deployment.token(user) if user else None)
    page.goto(f"{deployment.url}/anthropic-batches/")
    page.wait_for_selector("body[data-loaded]", timeout=30_000)
    page.screenshot(path=str(deployment.shots / shot), full_page=True)
    return page


def _row(page: Any, dag_id: str) -> Any:
    return page.locator(f'tr.job[data-job-key^="{dag_id}|"]')


def test_the_pipeline_job_shows_its_two_rounds_counts_costs_and_chart(
    deployment: Deployment, browser: Browser
) -> None:
    page = _open_list(deployment, browser, "admin", "jobs-admin.png")
    created = deployment.pipeline.xcom("create_batch")
    exported = deployment.pipeline.xcom("results_to_storage")
    estimate = deployment.pipeline.xcom("count_tokens")["estimated_cost_usd"]["total_max"]
    row = _row(page, PIPELINE)
    assert row.count() == 1
    rounds = row.locator(".job-rounds")
    assert rounds.get_attribute("data-rounds") == "2"
    assert json.loads(row.locator(".job-counts").get_attribute("data-counts")) == {
        **created["request_counts"]
    }
    assert created["request_counts"]["succeeded"] == 20
    bars = row.locator(".bar")
    assert bars.count() == len(created["batch_ids"]) == 2
    first_round = json.loads(bars.nth(0).get_attribute("data-counts"))
    assert first_round == created["rounds"][0]["request_counts"]
    assert first_round["errored"] == 1
    assert first_round["expired"] == 1
    assert float(row.locator(".job-cost-estimated").get_attribute("data-usd")) == pytest.approx(estimate)
    actual = exported["spend"]["cost_usd"]
    assert actual > 0
    assert float(row.locator(".job-cost-actual").get_attribute("data-usd")) == pytest.approx(actual)
    assert row.locator(".job-results code").get_attribute("data-destination") == exported["destination"]
    bars_in_chart = page.locator(f'#spend-svg rect.actual[data-dag="{PIPELINE}"]')
    assert bars_in_chart.count() == 1
    assert float(bars_in_chart.get_attribute("data-usd")) == pytest.approx(actual)
    assert page.locator("#spend-svg rect.estimate").count() >= 1


def test_the_job_view_of_the_task_instance_shows_rounds_and_error_types(
    deployment: Deployment, browser: Browser
) -> None:
    page = browser.page(deployment.url, deployment.token("admin"))
    run_id = deployment.pipeline.run_id
    # As Airflow 3.1's task instance tab opens it: the run id not encoded (its "+" is a plus, not a
    # space) and {MAP_INDEX} left as is for a task that is not mapped.
    assert "+" in str(run_id)
    page.goto(
        f"{deployment.url}/anthropic-batches/job?dag_id={PIPELINE}&run_id={run_id}&task_id=create_batch&map_index={{MAP_INDEX}}"
    )
    page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
    page.screenshot(path=str(deployment.shots / "job-view.png"), full_page=True)
    assert page.locator(".round").count() == 2
    types = {
        item.get_attribute("data-type"): item.get_attribute("data-count")
        for item in page.locator("#error-types li").all()
    }
    assert types == {"errored": "1", "expired": "1"}
    link = page.get_by_role("link", name="Task instance")
    assert link.get_attribute("href").startswith(f"../dags/{PIPELINE}/runs/")


def test_the_api_key_is_in_no_page_and_no_response(deployment: Deployment, browser: Browser) -> None:
    page = _open_list(deployment, browser, "admin", "jobs-admin-again.png")
    assert _row(page, PIPELINE).count() == 1
    assert API_KEY not in page.content()
    seen = [url for url, body in browser.bodies if API_KEY.encode() in body]
    assert browser.bodies, "no response was recorded"
    assert seen == []
    api_answers = [url for url, _ in browser.bodies if "/anthropic-batches/api/" in url]
    assert api_answers


def test_a_user_without_access_to_a_dag_does_not_see_its_jobs(
    deployment: Deployment, browser: Browser
) -> None:
    admin = _open_list(deployment, browser, "admin", "jobs-admin-both.png")
    assert _row(admin, HIDDEN_DAG).count() == 1  # the Variable-kept record, its ids full of "__"
    analyst = _open_list(deployment, browser, "analyst", "jobs-analyst.png")
    assert _row(analyst, PIPELINE).count() == 1
    assert _row(analyst, HIDDEN_DAG).count() == 0
    assert HIDDEN_DAG not in analyst.content()
    job = analyst.request.get(
        f"{deployment.url}/anthropic-batches/api/job",
        params={"dag_id": HIDDEN_DAG, "run_id": deployment.hidden.run_id, "task_id": HIDDEN_TASK},
    )
    assert job.status == 404


def test_a_user_who_may_not_read_a_dags_xcoms_sees_none_of_its_jobs(
    deployment: Deployment, browser: Browser
) -> None:
    page = _open_list(deployment, browser, "auditor", "jobs-auditor.png")
    assert page.locator("body").get_attribute("data-loaded") == "true"
    assert page.locator("tr.job").count() == 0
    headers = {"Authorization": f"Bearer {deployment.token('auditor')}"}
    dags = httpx.get(f"{deployment.url}/api/v2/dags", headers=headers).json()["dags"]
    assert {PIPELINE, HIDDEN_DAG} <= {dag["dag_id"] for dag in dags}  # the DAGs themselves: yes


def test_without_signing_in_no_job_is_shown(deployment: Deployment, browser: Browser) -> None:
    page = _open_list(deployment, browser, None, "jobs-signed-out.png")
    assert page.locator("body").get_attribute("data-loaded") == "error"
    assert "Sign in" in page.locator("#status").inner_text()
    assert page.locator("tr.job").count() == 0
    assert httpx.get(f"{deployment.url}/anthropic-batches/api/jobs").status_code == 401


def test_the_provider_registers_the_plugin_once_without_import_errors(deployment: Deployment) -> None:
    headers = {"Authorization": f"Bearer {deployment.token('admin')}"}
    plugins = httpx.get(f"{deployment.url}/api/v2/plugins", headers=headers).json()["plugins"]
    ours = [plugin for plugin in plugins if plugin["name"] == "anthropic_batches"]
    assert len(ours) == 1
    assert {view["destination"] for view in ours[0]["external_views"]} == {"nav", "task_instance"}
    errors = httpx.get(f"{deployment.url}/api/v2/plugins/importErrors", headers=headers).json()
    assert [error for error in errors["import_errors"] if "anthropic" in json.dumps(error)] == []


def test_the_view_is_in_the_airflow_ui_navigation(deployment: Deployment, browser: Browser) -> None:
    page = browser.page(deployment.url, deployment.token("admin"))
    page.goto(f"{deployment.url}/plugin/anthropic-batches")
    frame = page.frame_locator('iframe[title="Batches"]')
    frame.locator("body[data-loaded=true]").wait_for(timeout=60_000)
    assert frame.locator(f'tr.job[data-job-key^="{PIPELINE}|"]').count() == 1
    page.screenshot(path=str(deployment.shots / "airflow-ui.png"))
    if os.environ.get("BATCHES_SCREENSHOT_TO"):  # refreshes the README's picture
        shutil.copy(deployment.shots / "airflow-ui.png", os.environ["BATCHES_SCREENSHOT_TO"])


def test_the_task_instance_page_has_a_batch_job_tab_with_its_job(
    deployment: Deployment, browser: Browser
) -> None:
    page = browser.page(deployment.url, deployment.token("admin"))
    run_id = quote(str(deployment.pipeline.run_id), safe="")
    page.goto(f"{deployment.url}/dags/{PIPELINE}/runs/{run_id}/tasks/create_batch")
    page.get_by_role("link", name="Batch job").click()  # the tab the external view adds
    frame = page.frame_locator('iframe[title="Batch job"]')
    frame.locator("body[data-loaded=true]").wait_for(timeout=60_000)
    assert frame.locator(".round").count() == 2
    assert frame.locator("#job-facts").inner_text().count(PIPELINE) == 1
    page.screenshot(path=str(deployment.shots / "task-instance-tab.png"))
