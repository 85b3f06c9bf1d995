"""Prometheus metrics. Under gunicorn every worker writes to PROMETHEUS_MULTIPROC_DIR and
`/metrics` adds them up, so a scrape sees the whole server, not one worker. What is a fact
of the database rather than of a process (the learner's lag, who leads) is read from the
database when scraped, so every host's `/metrics` tells the same."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bandit.models import utcnow

DECISIONS = Counter("keyart_decisions_total", "Decisions served", ["outcome"])
DECISION_MODES = Counter(
    "keyart_decision_modes_total",
    "Decisions answered, by mode (policy, apprentice, single, fallback)",
    ["mode"],
)
FALLBACK_ANSWERS = Counter(
    "keyart_fallback_answers_total",
    "Titles answered from the last catalog snapshot while the database was unreachable",
)
EVENTS = Counter("keyart_events_total", "Outcome events received", ["status"])
UPLOADS = Counter(
    "keyart_uploads_total",
    "Artwork uploads by outcome: created, or the error code they were refused with",
    ["outcome"],
)
REQUEST_SECONDS = Histogram(
    "keyart_request_seconds",
    "Request latency, from routing to the end of the response, by Flask endpoint",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
# Per process (a `pid` label under gunicorn): each worker polls for snapshots on its own.
SERVING_POLICY_VERSION = Gauge(
    "keyart_serving_policy_version",
    "Policy snapshot version this process serves",
    multiprocess_mode="liveall",
)
SERVING_POLICY_AGE = Gauge(
    "keyart_serving_policy_age_seconds",
    "Seconds since the snapshot this process serves was learned, as of its last poll",
    multiprocess_mode="liveall",
)


def observe_serving_policy(policy: Any) -> None:
    """Record the version this process serves and how old it is (a `ServingPolicy`)."""
    SERVING_POLICY_VERSION.set(policy.current.version)
    created = policy.created_at
    if created is not None:
        SERVING_POLICY_AGE.set(max(0.0, (utcnow() - created).total_seconds()))


class LearnerCollector(Collector):
    """The learner's lag and the leading learner, read from the database at scrape time
    (`read` answers `(lag_seconds, leader)` with leader a dict of host and pid, or None;
    it raises if the database cannot be read, and the scrape goes on without them)."""

    def __init__(self, read: Callable[[], tuple[float, dict[str, Any] | None]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            lag, leader = self._read()
        except Exception:  # a scrape during an outage still shows the process's metrics
            return
        yield GaugeMetricFamily(
            "keyart_learner_lag_seconds",
            "Seconds since the oldest decision not yet learned became ready to learn",
            value=lag,
        )
        leading = GaugeMetricFamily(
            "keyart_learner_leader",
            "1 for the learner that leads (host, pid); absent when none leads",
            labels=["host", "pid"],
        )
        if leader is not None:
            leading.add_metric([str(leader["host"]), str(leader["pid"])], 1)
        yield leading


def render(learner: LearnerCollector | None = None) -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        out = generate_latest(registry)
    else:
        out = generate_latest()
    if learner is not None:
        extra = CollectorRegistry(auto_describe=False)
        extra.register(learner)
        out += generate_latest(extra)
    return out
