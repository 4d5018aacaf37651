"""TaskFlow: ``@task.anthropic_batch`` turns what a function yields into a batch job, one job per topic.

``ask_about.expand(topic=...)`` maps the decorated task: each topic is its own retry-safe job (its
record is kept per map index), waited for in the triggerer. Each yields prompt dicts; the shared
``model``, ``max_tokens`` and ``system`` fill them in, and custom_ids are ``prompt-<index>``. The
results of every job are then exported by a mapped transfer. Only manifests travel through XCom.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)

with DAG(
    dag_id="anthropic_batch_taskflow",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["anthropic", "example"],
    params={
        "topics": Param(["tides", "volcanoes"], type="array"),
        "questions_per_topic": Param(3, type="integer", minimum=1),
        "destination": Param("file:///tmp/claude-taskflow/", type="string"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def topics(params: dict[str, Any] | None = None) -> list[str]:
        assert params is not None
        return list(params["topics"])

    @task.anthropic_batch(
        model="claude-haiku-4-5",
        max_tokens=200,
        system="Answer in one short sentence.",
        deferrable=True,
        poll_interval=2,
        retries=2,
    )
    def ask_about(topic: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """The same topic yields the same prompts in the same order on every try (retry safety)."""
        assert params is not None
        for number in range(params["questions_per_topic"]):
            yield {"prompt": f"Fact {number + 1} about {topic}?", "temperature": 0}

    jobs = ask_about.expand(topic=topics())

    AnthropicBatchResultsToObjectStorageOperator.partial(
        task_id="results_to_storage",
        destination="{{ params.destination }}{{ run_id | replace(':', '_') | replace('+', '_') }}/"
        "{{ ti.map_index }}/",
    ).expand(batch_id=jobs)
