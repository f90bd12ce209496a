"""Prometheus metrics of `runbook serve` (names of SPEC 7, plus step durations), on a private registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class _Live(Collector):
    """Gauges computed when scraped, from the run store and the inbox (never a stale copy)."""

    def __init__(self, approvals_waiting: Callable[[], int], breakers: Callable[[], dict[str, bool]]) -> None:
        self._approvals_waiting = approvals_waiting
        self._breakers = breakers

    def collect(self) -> Iterable[Any]:
        """The two live gauges."""
        waiting = GaugeMetricFamily("runbook_approvals_waiting", "Runs paused for an approval")
        waiting.add_metric([], float(self._approvals_waiting()))
        yield waiting
        breaker = GaugeMetricFamily("runbook_breaker_open", "1 while a rule's circuit breaker is open", labels=["rule"])
        for rule, is_open in sorted(self._breakers().items()):
            breaker.add_metric([rule], 1.0 if is_open else 0.0)
        yield breaker


class Metrics:
    """The counters and histograms serve updates, and the text it answers on /metrics."""

    def __init__(self, approvals_waiting: Callable[[], int], breakers: Callable[[], dict[str, bool]]) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter("runbook_runs_total", "Runs driven by serve that ended, by outcome",
                            ["runbook", "outcome"], registry=self.registry)
        self.run_duration = Histogram("runbook_run_duration_seconds", "Run duration from start to end",
                                      ["runbook"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.step_duration = Histogram("runbook_step_duration_seconds", "Step duration of runs driven by serve",
                                       ["runbook", "step"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.alerts = Counter("runbook_alerts_total", "Events answered by serve, by rule and decision",
                              ["rule", "decision"], registry=self.registry)
        self.running = Gauge("runbook_serve_runs_active", "Run processes serve is driving now",
                             registry=self.registry)
        self.registry.register(_Live(approvals_waiting, breakers))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return bytes(generate_latest(self.registry))
