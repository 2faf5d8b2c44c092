"""Prometheus metrics: one registry per server, so tests can run several in one process."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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
        # Claims are counted on the hot path with plain arithmetic (see LoopCounter).
        self.claims = LoopCounter(
            "voucherd_claims",
            "Claim requests by result: created, repeated, or the error code.",
            "result",
        )
        self.claims_created = self.claims.child("created")
        self.claims_repeated = self.claims.child("repeated")
        self.claim_seconds = LoopHistogram(
            "voucherd_claim_duration_seconds",
            "Time from a claim's arrival to its durable reply.",
            LATENCY_BUCKETS,
        )
        self.rewards = LoopCounter(
            "voucherd_rewards",
            "Reward requests by result: rewarded, repeated, the reason for no reward, or the "
            "error code.",
            "result",
        )
        self.reward_seconds = LoopHistogram(
            "voucherd_reward_duration_seconds",
            "Time from a reward request's arrival to its reply.",
            LATENCY_BUCKETS,
        )
        self.events = LoopCounter(
            "voucherd_events", "Events written to the stream, by type.", "type"
        )
        self.loop_lag = LoopHistogram(
            "voucherd_event_loop_lag_seconds",
            "How late the event loop ran a timer: time it could not spend on requests.",
            LATENCY_BUCKETS,
        )
        self.journal_commit_seconds = LoopHistogram(
            "voucherd_journal_commit_duration_seconds",
            "Time to write and commit one group of journal records.",
            LATENCY_BUCKETS,
        )
        self.journal_records_per_commit = LoopHistogram(
            "voucherd_journal_records_per_commit",
            "Records written by one journal commit.",
            BATCH_BUCKETS,
        )
        for collector in (
            self.claims,
            self.claim_seconds,
            self.rewards,
            self.reward_seconds,
            self.events,
            self.loop_lag,
            self.journal_commit_seconds,
            self.journal_records_per_commit,
        ):
            self.registry.register(collector)
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
        self.upload_rest_seconds = Counter(
            "voucherd_upload_rest_seconds_total",
            "Time uploads rested to give way to claims being written beside them.",
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


class LoopCounter(Collector):
    """A labelled counter touched only from the event loop's thread: no lock per increment.

    prometheus-client guards every increment with a lock, which costs a noticeable share of a
    claim; scrapes run on the same loop, so plain integers are consistent here."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self._children: dict[str, _Count] = {}

    def child(self, value: str) -> _Count:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = _Count()
        return child

    def labels(self, value: str) -> _Count:
        return self.child(value)

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, child in sorted(self._children.items()):
            family.add_metric([value], child.value)
        yield family

    def describe(self) -> Iterable[Metric]:
        return []


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class LoopHistogram(Collector):
    """A histogram touched only from the event loop's thread (see LoopCounter)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def collect(self) -> Iterable[Metric]:
        cumulative = list(itertools.accumulate(self.counts))
        buckets = [
            (str(bound), float(count))
            for bound, count in zip([*self.bounds, "+Inf"], cumulative, strict=True)
        ]
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self.sum
        )

    def describe(self) -> Iterable[Metric]:
        return []


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()

    def describe(self) -> Iterable[Metric]:
        return []


__all__ = ["CounterMetricFamily", "GaugeMetricFamily", "Metric", "Metrics"]
