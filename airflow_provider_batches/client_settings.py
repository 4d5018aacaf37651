"""``ClientSettings``: what a client needs to reach the API, and the one home of every connection default.

The hook reads a connection into it (an extra the connection leaves out keeps the default here), the
plans of :mod:`~airflow_provider_batches.client_core` take it, and the connection form in
:mod:`~airflow_provider_batches.get_provider_info` shows its defaults. On the ground floor: it imports
nothing of the package and nothing of Airflow, because Airflow reads the provider's metadata while
its own configuration is still loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CONNECTION_TYPE",
    "DEFAULT_ANTHROPIC_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_REQUESTS_PER_MINUTE",
    "ClientSettings",
]

#: This provider's connection type: the hook's, and the connection form's.
CONNECTION_TYPE = "anthropic_batches"
DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
#: The waits' default request budget: safe at the lowest tier (50 requests per minute), with room
#: left for creates and downloads.
DEFAULT_MAX_REQUESTS_PER_MINUTE = 40


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs, resolved from an Airflow connection. The key never shows in repr."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    anthropic_version: str = DEFAULT_ANTHROPIC_VERSION
    #: Read timeout of one call, and of opening its connection (seconds).
    timeout: float = 600.0
    connect_timeout: float = 10.0
    #: Retries of a failed call, and the most time one call spends waiting between them (seconds).
    max_retries: int = 2
    max_retry_wait: float = 300.0
    betas: tuple[str, ...] = ()
    #: The waits' request budget for this key in one process (see ``budget``); 0 = unlimited.
    max_requests_per_minute: int = DEFAULT_MAX_REQUESTS_PER_MINUTE

    def httpx_timeout(self) -> httpx.Timeout:
        import httpx  # here: importing it costs a quarter second, and the connection form needs none of it

        return httpx.Timeout(self.timeout, connect=self.connect_timeout)

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def redact(self, text: str) -> str:
        """``text`` with the key in any form it can take there (as is, escaped) replaced by ``***``.

        For text that did not come from this code: a transport error's message, an error body (a
        gateway may echo the request's headers back).
        """
        key = self.api_key
        for form in dict.fromkeys((key, key.encode("unicode_escape").decode("ascii"), repr(key)[1:-1])):
            if form:
                text = text.replace(form, "***")
        return text
