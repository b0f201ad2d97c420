"""What every screen of a logged-in console needs: the toplevel client, the runner, the user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from admin_gui.api_client import ApiClient
from admin_gui.workers import TaskRunner

#: Render nodes are polled often and may be down: fail fast instead of holding a worker thread.
NODE_TIMEOUT_S = (3.0, 10.0)


@dataclass
class ConsoleContext:
    client: ApiClient
    runner: TaskRunner
    user: dict[str, Any]

    @property
    def server_url(self) -> str:
        return self.client.base_url

    def server_client(self, base_url: str) -> ApiClient:
        """A client for an institution server (same token, same CA file)."""
        return self.client.for_server(base_url)

    def node_client(self, base_url: str) -> ApiClient:
        return self.client.for_server(base_url, timeout=NODE_TIMEOUT_S)
