"""Custom TorchServe metrics of the handler (written to model_metrics.log / the metrics API)."""

from __future__ import annotations

from handler.classifier import BatchTimings


class HandlerMetrics:
    """Thin wrapper over TorchServe's metrics cache; a no-op when there is none (in-process use)."""

    def __init__(self, metrics_cache):
        self.cache = metrics_cache

    def _dimensions(self, backend: str) -> list:
        from ts.metrics.dimension import Dimension

        return [Dimension("Backend", backend)]

    def backend_started(self, backend: str) -> None:
        """A gauge, 1 for the backend this worker runs, so dashboards can tell which path answers."""
        if self.cache is None:
            return
        from ts.metrics.metric_type_enum import MetricTypes

        self.cache.add_metric("ActiveBackend", 1, "count", None, self._dimensions(backend), MetricTypes.GAUGE)

    def batch_done(self, backend: str, requests: int, rejected: int, timings: BatchTimings, total_ms: float) -> None:
        """Batch size, texts, rejected requests, and tokenize / infer / total milliseconds of one batch."""
        if self.cache is None:
            return
        from ts.metrics.metric_type_enum import MetricTypes

        dims = self._dimensions(backend)
        self.cache.add_metric("BatchSize", requests, "count", None, dims, MetricTypes.GAUGE)
        self.cache.add_metric("BatchTexts", timings.texts, "count", None, dims, MetricTypes.GAUGE)
        self.cache.add_metric("RejectedRequests", rejected, "count", None, dims, MetricTypes.COUNTER)
        self.cache.add_time("TokenizeMs", timings.tokenize_ms, None, "ms", dims)
        self.cache.add_time("InferMs", timings.infer_ms, None, "ms", dims)
        self.cache.add_time("HandlerMs", total_ms, None, "ms", dims)
