"""What every screen of a logged-in console needs: the toplevel client, the runner, the user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from admin_gui.api_client import ApiClient
from admin_gui.workers import TaskRunner
from shared.roles import Principal

#: Calls made on a timer (node health) may hit servers that are down: fail fast instead of
#: holding a worker thread until the next round.
POLLING_TIMEOUT_S = (3.0, 10.0)


@dataclass
class ConsoleContext:
    client: ApiClient
    runner: TaskRunner
    user: dict[str, Any]

    @property
    def caller(self) -> Principal:
        """The signed-in user as `shared.roles` sees them: the console offers what the API allows."""
        return Principal(str(self.user.get("role", "")), str(self.user.get("institution_id", "")))

    def server_client(self, base_url: str) -> ApiClient:
        """A client for an institution server (same token, same CA file)."""
        return self.client.for_server(base_url)

    def polling_client(self, base_url: str) -> ApiClient:
        """A client with short timeouts for any server polled on a timer."""
        return self.client.for_server(base_url, timeout=POLLING_TIMEOUT_S)
