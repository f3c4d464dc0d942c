"""What the service reports per batch, and where it goes: one record type, one sink per door.

`ClassifierService` hands each batch's `BatchRecord` to its `MetricsSink`. TorchServe's door uses
`TorchServeMetrics` (model_metrics.log / the metrics API); the KServe server uses
`kserve_server.metrics.PrometheusMetrics` (its /metrics endpoint). Same figures, same names in both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchRecord:
    """One batch through the service: requests, rejected ones, texts, real tokens and milliseconds per stage,
    texts answered from the prediction cache and texts the model computed (tokens and stages count those)."""

    backend: str
    requests: int
    rejected: int
    texts: int
    tokens: int
    tokenize_ms: float
    infer_ms: float
    total_ms: float
    cache_hits: int = 0
    computed: int = 0


class MetricsSink:
    """Where the service's figures go; this base class drops them (in-process use, tests)."""

    def backend_started(self, backend: str) -> None:
        """The backend this server runs (a gauge of 1, so dashboards can tell which path answers)."""

    def batch_done(self, record: BatchRecord) -> None:
        """One batch answered."""


class TorchServeMetrics(MetricsSink):
    """Custom TorchServe metrics through the worker's metrics cache (`context.metrics`)."""

    def __init__(self, metrics_cache):
        self.cache = metrics_cache

    def dimensions(self, backend: str) -> list:
        """The dimensions every metric carries: the backend's name."""
        from ts.metrics.dimension import Dimension

        return [Dimension("Backend", backend)]

    def backend_started(self, backend: str) -> None:
        from ts.metrics.metric_type_enum import MetricTypes

        self.cache.add_metric("ActiveBackend", 1, "count", None, self.dimensions(backend), MetricTypes.GAUGE)

    def batch_done(self, record: BatchRecord) -> None:
        from ts.metrics.metric_type_enum import MetricTypes

        dims = self.dimensions(record.backend)
        self.cache.add_metric("BatchSize", record.requests, "count", None, dims, MetricTypes.GAUGE)
        self.cache.add_metric("BatchTexts", record.texts, "count", None, dims, MetricTypes.GAUGE)
        self.cache.add_metric("BatchTokens", record.tokens, "count", None, dims, MetricTypes.GAUGE)
        self.cache.add_metric("RejectedRequests", record.rejected, "count", None, dims, MetricTypes.COUNTER)
        self.cache.add_metric("CacheHits", record.cache_hits, "count", None, dims, MetricTypes.COUNTER)
        self.cache.add_metric("CacheMisses", record.texts - record.cache_hits, "count", None, dims, MetricTypes.COUNTER)
        self.cache.add_time("TokenizeMs", record.tokenize_ms, None, "ms", dims)
        self.cache.add_time("InferMs", record.infer_ms, None, "ms", dims)
        self.cache.add_time("HandlerMs", record.total_ms, None, "ms", dims)


def metrics_for(metrics_cache) -> MetricsSink:
    """TorchServe's metrics when the worker has a cache, else the sink that drops everything."""
    return MetricsSink() if metrics_cache is None else TorchServeMetrics(metrics_cache)
