"""Helpers the toplevel tests share: the test-client wrapper, the seeded passwords, request bodies."""

from __future__ import annotations

from typing import Any

PASSWORDS = {"admin": "admin-password-1", "physician": "physician-pass-1", "admin_b": "admin-b-password",
             "physician_b": "physician-b-pass"}


class Api:
    """The Flask test client; `call` returns (status, json, response)."""

    def __init__(self, client):
        self.client = client

    def call(self, method: str, path: str, token: str | None = None, json: Any = None,
             headers: dict[str, str] | None = None, **kwargs) -> tuple[int, Any, Any]:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = self.client.open(path, method=method, json=json, headers=headers, **kwargs)
        return response.status_code, response.get_json(silent=True), response

    def login(self, username: str, password: str) -> dict[str, Any]:
        status, body, _ = self.call("POST", "/api/v1/auth/login",
                                    json={"username": username, "password": password})
        assert status == 200, body
        return body


def patient_body(**extra: Any) -> dict[str, Any]:
    body = {"first_name": "Ana", "last_name": "Šimić", "sex": "F", "birth_date": "1970-03-15",
            "insurance_number": "HR-123456"}
    body.update(extra)
    return body
