"""Prometheus metrics. Under gunicorn every worker writes to PROMETHEUS_MULTIPROC_DIR and
`/metrics` adds them up, so a scrape sees the whole server, not one worker."""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

DECISIONS = Counter("keyart_decisions_total", "Decisions served", ["outcome"])
EVENTS = Counter("keyart_events_total", "Outcome events received", ["status"])
REQUEST_SECONDS = Histogram(
    "keyart_request_seconds",
    "Request latency, from routing to the end of the response, by Flask endpoint",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
