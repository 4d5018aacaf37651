"""``make ui``: the Airflow UI with the Batches view, on the demo's Airflow home.

Runs ``make demo`` first when the demo's home has no metadata DB yet, then starts ``airflow
api-server`` on 127.0.0.1 against that home with the emulator as ``anthropic_default`` (the
connection a re-run would use; the view itself makes no API calls), and prints the URL. Sign-in
is off (the simple auth manager's "all admins" mode): this is a local demo, never a deployment.
Ctrl-C stops both.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airflow_provider_batches.emulator import Emulator, EmulatorConfig  # noqa: E402
from airflow_provider_batches.testing import connection_json  # noqa: E402
from tests.airflow_harness import AirflowEnv  # noqa: E402
from tests.api_server import api_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=28080)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".demo", help="the demo's work directory")
    args = parser.parse_args()
    home = args.workdir / "airflow-home"
    if not (home / "airflow.db").exists():
        print("No demo run yet: running `make demo` first.", flush=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], check=True)
    airflow = AirflowEnv(home)
    log = args.workdir / "api-server.log"
    print(f"Starting the Airflow API server on {home} (log: {log}) ...", flush=True)
    with (
        Emulator(EmulatorConfig(processing_seconds=4)) as emulator,
        api_server(
            airflow,
            log,
            port=args.port,
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW_CONN_ANTHROPIC_DEFAULT=connection_json(emulator),
        ) as url,
    ):
        print(f"\nBatches view in the Airflow UI:  {url}/plugin/anthropic-batches")
        print(f"The page alone:                  {url}/anthropic-batches/")
        print(f"Emulator (anthropic_default):    {emulator.base_url}")
        print("\nCtrl-C to stop.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
