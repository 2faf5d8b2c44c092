"""Prometheus metrics: one registry per server, so tests can run several in one process."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# From a quarter of a millisecond to two and a half seconds: a healthy claim sits at the low end,
# a disk in trouble at the high end.
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.claims = Counter(
            "voucherd_claims_total",
            "Claim requests by result: created, repeated, or the error code.",
            ["result"],
            registry=self.registry,
        )
        # Bound once: looking a child up by label costs a lock and a dict per claim.
        self.claims_created = self.claims.labels("created")
        self.claims_repeated = self.claims.labels("repeated")
        self.claim_seconds = Histogram(
            "voucherd_claim_duration_seconds",
            "Time from a claim's arrival to its durable reply.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.uploads = Counter(
            "voucherd_uploads_total",
            "Finished uploads by status.",
            ["status"],
            registry=self.registry,
        )
        self.codes_uploaded = Counter(
            "voucherd_codes_uploaded_total",
            "Codes accepted by uploads.",
            registry=self.registry,
        )
        self.codes_rejected = Counter(
            "voucherd_codes_rejected_total",
            "Rows rejected by uploads, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.journal_commit_seconds = Histogram(
            "voucherd_journal_commit_duration_seconds",
            "Time to write and commit one group of journal records.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.journal_records_per_commit = Histogram(
            "voucherd_journal_records_per_commit",
            "Records written by one journal commit.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.journal_failures = Counter(
            "voucherd_journal_failures_total",
            "Journal commits that failed and were rolled back.",
            registry=self.registry,
        )

    def watch(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Add gauges read at scrape time from live state (per-list code counts)."""
        self.registry.register(_Callback(collect))


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()

    def describe(self) -> Iterable[Metric]:
        return []


__all__ = ["GaugeMetricFamily", "Metric", "Metrics"]
