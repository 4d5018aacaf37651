"""``anthropic-batches-emulator`` / ``python -m airflow_provider_batches.emulator``: run in the foreground.

Prints exactly one line on stdout once it accepts connections; the base URL is its last word.
Logs go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from airflow_provider_batches.emulator.config import DEFAULT_API_KEY, DEFAULT_MODELS, EmulatorConfig
from airflow_provider_batches.emulator.server import NotifyingServer, base_url_of, bind_socket, uvicorn_config
from airflow_provider_batches.emulator.state import EmulatorState

READY_LINE = "Anthropic emulator listening on {base_url}"


def build_parser() -> argparse.ArgumentParser:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(
        prog="anthropic-batches-emulator",
        description="A local emulator of the Anthropic Messages and Message Batches API.",
    )
    add = parser.add_argument
    add("--host", default=defaults.host, help="interface to bind (default %(default)s)")
    add("--port", type=int, default=8765, help="port to bind; 0 picks a free one (default %(default)s)")
    add(
        "--data-dir",
        type=Path,
        help="keep batches here across restarts (default: a temp dir, removed on exit)",
    )
    add("--public-base-url", help="base URL used in results_url (default: the Host the client used)")
    add(
        "--api-key",
        action="append",
        dest="api_keys",
        help=f"accepted key, repeatable (default {DEFAULT_API_KEY})",
    )
    add("--processing-seconds", type=float, default=defaults.processing_seconds, help="in_progress -> ended")
    add("--canceling-seconds", type=float, default=defaults.canceling_seconds, help="canceling -> ended")
    add("--expiry-seconds", type=float, default=defaults.expiry_seconds, help="created -> expires_at")
    add("--archive-seconds", type=float, default=defaults.archive_seconds, help="created -> archived_at")
    add("--max-body-bytes", type=int, default=defaults.max_batch_body_bytes, help="create-batch body limit")
    add(
        "--model",
        action="append",
        dest="models",
        default=[],
        help="a model id to know besides the default catalogue (the SDK's ids), repeatable",
    )
    add("--errored-fraction", type=float, default=0.0, help="fraction of batch requests that end errored")
    add("--errored-type", default=defaults.errored_type, help="error type for --errored-fraction")
    add("--seed", type=int, default=0, help="seed of every random decision (faults, errored fraction)")
    add("--rpm", type=int, default=0, dest="requests_per_minute", help="requests per minute per key; 0 = off")
    add("--count-tokens-rpm", type=int, default=0, help="count_tokens requests per minute per key; 0 = off")
    add("--max-queued-requests", type=int, default=None, help="queue limit per key (429 on create)")
    add("--overloaded-fraction", type=float, default=0.0, help="fraction of calls answered 529")
    add("--api-error-fraction", type=float, default=0.0, help="fraction of calls answered 500")
    add("--timeout-fraction", type=float, default=0.0, help="fraction of calls answered 504")
    add("--drop-fraction", type=float, default=0.0, help="fraction of calls whose connection is dropped")
    add(
        "--drop-after-fraction",
        type=float,
        default=0.0,
        help="fraction of calls performed by the server whose connection is then dropped (a lost answer)",
    )
    add("--slow-seconds", type=float, default=0.0, help="delay added to calls")
    add("--slow-fraction", type=float, default=1.0, help="fraction of calls delayed by --slow-seconds")
    add("--retry-after-ms", type=int, help="send retry-after-ms with every injected error")
    add("--cut-results-after-bytes", type=int, help="cut results downloads after this many bytes")
    add("--cut-results-fraction", type=float, default=1.0, help="fraction of results downloads cut")
    add("--log-level", default="warning", help="uvicorn log level (stderr)")
    add("--access-log", action="store_true", help="log every request (stderr)")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        public_base_url=args.public_base_url,
        api_keys=args.api_keys or [DEFAULT_API_KEY],
        processing_seconds=args.processing_seconds,
        canceling_seconds=args.canceling_seconds,
        expiry_seconds=args.expiry_seconds,
        archive_seconds=args.archive_seconds,
        max_batch_body_bytes=args.max_body_bytes,
        models=list(dict.fromkeys([*DEFAULT_MODELS, *args.models])),
        errored_fraction=args.errored_fraction,
        errored_type=args.errored_type,
        seed=args.seed,
        requests_per_minute=args.requests_per_minute,
        count_tokens_requests_per_minute=args.count_tokens_rpm,
        max_queued_requests=args.max_queued_requests,
        overloaded_fraction=args.overloaded_fraction,
        api_error_fraction=args.api_error_fraction,
        timeout_fraction=args.timeout_fraction,
        drop_fraction=args.drop_fraction,
        drop_after_fraction=args.drop_after_fraction,
        slow_seconds=args.slow_seconds,
        slow_fraction=args.slow_fraction,
        retry_after_ms=args.retry_after_ms,
        cut_results_after_bytes=args.cut_results_after_bytes,
        cut_results_fraction=args.cut_results_fraction,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    state = EmulatorState(config)
    sock = bind_socket(config.host, config.port)
    base_url = base_url_of(sock)

    def announce() -> None:
        print(READY_LINE.format(base_url=base_url), flush=True)

    server = NotifyingServer(
        uvicorn_config(state, log_level=args.log_level, access_log=args.access_log), announce
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        state.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
