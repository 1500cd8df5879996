"""The server's Prometheus metrics, served at TF Serving's path `/monitoring/prometheus/metrics`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets from 0.5 ms to 30 s: a batch-1 greedy call takes a few ms, a long beam a few s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """Requests by API, method and status; their latency; merged batch sizes; the served version."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "attend_requests", "Requests answered", ["api", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "attend_request_latency_seconds",
            "Time from request to answer",
            ["api", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "attend_batch_size",
            "Rows per merged SavedModel call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.version = Gauge("attend_model_version", "The version served", ["model"], registry=self.registry)

    def observe(self, api: str, method: str, status: str, seconds: float) -> None:
        self.requests.labels(api, method, status).inc()
        self.latency.labels(api, method).observe(seconds)

    def page(self) -> bytes:
        return generate_latest(self.registry)
