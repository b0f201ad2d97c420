"""Fixtures for the browser tests: one Chromium per session, a fresh context per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webviewer.browser import DESKTOP, launch_chromium, server_cert_of


@pytest.fixture(scope="session")
def browser(playwright_instance, deployment):
    browser = launch_chromium(playwright_instance, server_cert_of(deployment))
    yield browser
    browser.close()


@pytest.fixture
def page(browser, deployment) -> Iterator:
    context = browser.new_context(viewport=DESKTOP, ignore_https_errors=False,
                                  base_url=deployment.url("web"))
    context.set_default_timeout(15000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="session")
def shots(artifacts_dir) -> Path:
    folder = artifacts_dir / "webviewer"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session", autouse=True)
def _requests_trusts_the_local_ca():
    """requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override `session.verify` (psf/requests#3829),
    so `daemons.demo.ApiClient` would check the deployment against the system store, not the local
    CA, wherever those variables are set. Unset them for these tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("REQUESTS_CA_BUNDLE", raising=False)
        mp.delenv("CURL_CA_BUNDLE", raising=False)
        yield
