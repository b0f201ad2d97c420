"""Prometheus metrics of every layer at `GET /metrics` (prometheus_client).

Each app has its own registry (tests and the demo run several apps in one process). Requests are
counted and timed by the Flask URL rule (`/api/v1/records/<record_id>/frames/<int:index>`), never
the raw path, so the number of series stays bounded and no patient or record id reaches the
metrics.

Layers served by several gunicorn workers (toplevel, institution, web) count in every worker:
`sivr serve` then gives the instance its own fresh PROMETHEUS_MULTIPROC_DIR and a scrape adds up
the files every worker wrote there (prometheus_client's multiprocess mode). Figures read from live
state at scrape time (`add_live`: a render node's memory and loaded records) are the answering
worker's view; the node's are the same from every worker (`daemons.render.metrics`).

Who may read `/metrics`: the addresses in `metrics.allow` (loopback by default) or whoever sends
`Authorization: Bearer <the secret in metrics.token_file>`; anyone else gets 403. The figures are
not patient data, but they describe load and usage and are nobody else's business.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from shared.config import Config, ConfigError
from shared.errors import ApiError
from shared.files import require_owner_only
from shared.logs import request_elapsed_s, request_route

METRICS_EXTENSION = "sivr_metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Request latency buckets in seconds: an image request is a few ms; an upload may take a minute.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


#: The methods counted by name; any other is counted as "other".
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Children:
    """The children of one labelled metric, each made at its label set's first use and kept.

    prometheus_client's `labels()` validates the values and looks the child up under a lock on
    every call, four calls an image request. The label sets SIVR uses are bounded (routes, statuses,
    kinds and formats), so keeping every child costs little. Two threads making the same child at
    once get the one object `labels()` holds for it.
    """

    def __init__(self, metric: Any):
        self._metric = metric
        self._made: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._made.get(values)
        if child is None:
            child = self._made[values] = self._metric.labels(*values)
        return child


class Metrics:
    """One app's registry and its request metrics; layers add their own to `registry`."""

    def __init__(self, layer: str, allow: list[str], token: str | None):
        self.layer = layer
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("sivr_http_requests", "HTTP requests answered, by route and status",
                                ["layer", "method", "route", "status"], registry=self.registry)
        self.latency = Histogram("sivr_http_request_duration_seconds",
                                 "Time from the request's arrival in the app to its response",
                                 ["layer", "method", "route", "status"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self._allow = [ipaddress.ip_network(a, strict=False) for a in allow]
        self._token = token
        self._live: list[Collector] = []
        self._requests, self._latency = Children(self.requests), Children(self.latency)

    def add_live(self, collector: Collector) -> None:
        """A collector read at scrape time from the serving process's state (not a counter kept
        in files): in multiprocess mode it is what the worker answering the scrape sees."""
        self.registry.register(collector)
        self._live.append(collector)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        # a method name is the caller's to choose: each new one would be a new series, kept until restart
        labels = (self.layer, method if method in HTTP_METHODS else "other", route, str(status))
        self._requests(*labels).inc()
        self._latency(*labels).observe(seconds)

    def may_read(self) -> bool:
        """The caller's address is listed, or it sent the configured bearer token."""
        if self._token is not None:
            scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), self._token.encode()):
                return True
        try:
            address = ipaddress.ip_address(request.remote_addr or "")
        except ValueError:
            return False
        return any(address in network for network in self._allow)

    def exposition(self) -> bytes:
        """The text format of this app's metrics, summed over every worker in multiprocess mode."""
        folder = os.environ.get(MULTIPROC_ENV)
        if not folder:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=folder)
        for collector in self._live:
            merged.register(collector)
        return generate_latest(merged)


def _read_token(config: Config) -> str | None:
    path = config["metrics"]["token_file"]
    if not path:
        return None
    try:
        require_owner_only(path, f"{config.source}: metrics.token_file")
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{config.source}: metrics.token_file: cannot read {path}: {exc}") from exc
    if len(token) < 16:
        raise ConfigError(f"{config.source}: metrics.token_file: the token in {path} must be at least 16 characters")
    return token


def _parse_allow(config: Config) -> list[str]:
    allow = config["metrics"]["allow"]
    for entry in allow:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{config.source}: metrics.allow: {entry!r} is not an address or network") from exc
    return allow


def install_metrics(app: Flask, config: Config) -> Metrics:
    """Count and time every request, and serve `GET /metrics` to allowed readers.

    Requests are timed from `shared.logs`'s start hook, so `install_request_logging` comes first.
    """
    metrics = Metrics(config.layer, _parse_allow(config), _read_token(config))
    app.extensions[METRICS_EXTENSION] = metrics

    @app.after_request
    def _count(response: Response) -> Response:
        elapsed = request_elapsed_s()
        if elapsed is not None:
            metrics.observe(request.method, request_route(), response.status_code, elapsed)
        return response

    @app.get("/metrics")
    def prometheus_metrics():
        if not metrics.may_read():
            raise ApiError(403, "forbidden", "metrics are readable only from the addresses in metrics.allow "
                                             "or with the bearer token of metrics.token_file")
        return Response(metrics.exposition(), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                        headers={"Cache-Control": "no-store"})

    return metrics


def app_metrics(app: Any = None) -> Metrics:
    """The metrics of `app` (default: the current app)."""
    return (app or current_app).extensions[METRICS_EXTENSION]
