"""Helpers the toplevel tests share: the test-client wrapper, the seeded passwords, request bodies."""

from __future__ import annotations

import threading
from typing import Any

import peewee
import pytest

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


#: A request another client makes: its token, method, path and JSON body.
Request = tuple[str, str, str, dict[str, Any] | None]


class Other:
    """`request` made from another thread, as another worker makes it, the first time a view calls
    `model.<method>` (its save or its deletion of a row): given a second to finish there, which it
    does at once where nothing holds it back (`answer` waits for the rest)."""

    def __init__(self, app: Any, monkeypatch: pytest.MonkeyPatch, model: type[peewee.Model], method: str,
                 request: Request):
        self.app, self.request = app, request
        self.thread: threading.Thread | None = None
        self.answers: list[tuple[int, Any]] = []
        real = getattr(model, method)

        def hooked(row: peewee.Model, *args: Any, **kwargs: Any) -> Any:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run)
                self.thread.start()
                self.thread.join(1.0)  # unhindered, it is over by now; held by a lock, it waits for this view
            return real(row, *args, **kwargs)

        monkeypatch.setattr(model, method, hooked)

    def _run(self) -> None:
        token, method, path, body = self.request
        response = self.app.test_client().open(path, method=method, json=body,
                                               headers={"Authorization": f"Bearer {token}"})
        self.answers.append((response.status_code, response.get_json(silent=True)))

    def answer(self) -> tuple[int, Any]:
        assert self.thread is not None, "the view never reached the row"
        self.thread.join(30)
        assert not self.thread.is_alive(), "the other request never finished"
        return self.answers[0]


def patient_body(**extra: Any) -> dict[str, Any]:
    body = {"first_name": "Ana", "last_name": "Šimić", "sex": "F", "birth_date": "1970-03-15",
            "insurance_number": "HR-123456"}
    body.update(extra)
    return body
