"""Airflow's SimpleAuthManager with per-DAG grants, for the tests of who sees which DAG's jobs.

The simple auth manager grants a role on every DAG; real deployments (FAB, Keycloak...) grant DAGs
one by one. ``BATCHES_TEST_DAG_GRANTS`` (JSON: user name -> DAG ids) limits the users it names to
those DAGs; ``BATCHES_TEST_DENIED_ENTITIES`` (JSON: user name -> ``DagAccessEntity`` names) takes
parts of every DAG from the users it names (e.g. its XComs); the others keep their role's access.
Everything else is the simple auth manager's own.
"""

from __future__ import annotations

import json
import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

GRANTS_ENV = "BATCHES_TEST_DAG_GRANTS"
DENIED_ENV = "BATCHES_TEST_DENIED_ENTITIES"


class DagScopedSimpleAuthManager(SimpleAuthManager):
    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        grants = json.loads(os.environ.get(GRANTS_ENV, "{}"))
        allowed = grants.get(user.get_name())
        if allowed is not None and (details is None or details.id not in allowed):
            return False
        denied = json.loads(os.environ.get(DENIED_ENV, "{}")).get(user.get_name(), [])
        if access_entity is not None and access_entity.name in denied:
            return False
        return bool(
            super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
        )
