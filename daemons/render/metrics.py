"""A render node's own Prometheus figures, beside the request metrics every layer has.

Timings are observed where the work happens (render and encode, by kind and format). The state
figures — records loaded, memory against the budget, the image cache, the loader queue — are read
at scrape time from the same objects `GET /api/v1/node` reports from, so the console's node
health screen and Prometheus never disagree. Records loaded and memory are the node's (every
worker maps the same decoded series); the image cache, the loader queue and the WebP counter are
those of the worker answering the scrape. Timings are summed over the workers (multiprocess mode).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from flask.blueprints import BlueprintSetupState
from flask.sansio.app import App
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.metrics import Children, app_metrics

if TYPE_CHECKING:
    from daemons.render.node import Node

RENDER_METRICS_EXTENSION = "sivr_render_metrics"
KINDS = ("frame", "mpr", "volume")
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RenderMetrics:
    def __init__(self, app: App):
        registry = app_metrics(app).registry
        self.render_seconds = Histogram(
            "sivr_render_seconds", "Time to compute an image (before encoding): frame (2D), mpr or volume (3D)",
            ["kind", "format"], buckets=STAGE_BUCKETS, registry=registry)
        self.encode_seconds = Histogram(
            "sivr_encode_seconds", "Time to encode a rendered image to PNG, JPEG or WebP",
            ["kind", "format"], buckets=STAGE_BUCKETS, registry=registry)
        self._stages = {"render": Children(self.render_seconds), "encode": Children(self.encode_seconds)}

    def stage(self, stage: str, kind: str, fmt: str) -> Any:
        """The histogram child timing `stage` ("render" or "encode") of `kind` images in `fmt`."""
        return self._stages[stage](kind, fmt)


@contextmanager
def timed(stage: str, kind: str, fmt: str) -> Iterator[None]:
    """Time the block as `stage` ("render" or "encode") of a `kind` image in format `fmt`."""
    metrics: RenderMetrics = current_app.extensions[RENDER_METRICS_EXTENSION]
    child = metrics.stage(stage, kind, fmt)
    started = time.perf_counter()
    try:
        yield
    finally:
        child.observe(time.perf_counter() - started)


class NodeCollector(Collector):
    """The node's state, read when Prometheus scrapes."""

    def __init__(self, node: Node):
        self.node = node

    def collect(self):
        node, registry, images = self.node, self.node.registry, self.node.images
        yield GaugeMetricFamily("sivr_records_loaded", "Records held decoded in RAM", value=registry.loaded_count())
        yield GaugeMetricFamily("sivr_memory_used_bytes", "RAM used by loaded records", value=registry.memory_used())
        yield GaugeMetricFamily("sivr_memory_budget_bytes", "The node's memory budget for loaded records",
                                value=registry.budget_bytes)
        yield GaugeMetricFamily("sivr_loader_queue_frames", "Frames of loaded records still waiting to be decoded",
                                value=registry.queued_frames())
        cache = CounterMetricFamily("sivr_image_cache_requests", "Encoded-image cache lookups", labels=["result"])
        cache.add_metric(["hit"], images.hits)
        cache.add_metric(["miss"], images.misses)
        yield cache
        yield GaugeMetricFamily("sivr_image_cache_bytes",
                                "Memory the image cache holds: its encoded images and their bookkeeping",
                                value=images.used_bytes)
        yield GaugeMetricFamily("sivr_image_cache_budget_bytes", "The image cache's byte budget",
                                value=images.budget_bytes)
        yield CounterMetricFamily("sivr_webp_fast_encodes", "WebP images encoded at lower effort under load",
                                  value=node.webp_effort.fast_encodes)


def register_timings(state: BlueprintSetupState) -> None:
    """`record_once` hook of the image blueprints: their app gets the timing histograms (once)."""
    if RENDER_METRICS_EXTENSION not in state.app.extensions:
        state.app.extensions[RENDER_METRICS_EXTENSION] = RenderMetrics(state.app)


def install_node_metrics(app: Flask, node: Node) -> None:
    """The node's state figures on the app's `/metrics`."""
    app_metrics(app).add_live(NodeCollector(node))
