"""The service's per-batch figures on the KServe server's /metrics (Prometheus text format).

The same figures TorchServe's door writes to its metrics log (handler/metrics.py), under one prefix:
    bert_trt_active_backend{backend}            gauge, 1 for the backend that answers
    bert_trt_batch_requests / _texts / _tokens  histograms per batch
    bert_trt_rejected_requests_total            counter (4xx / INVALID_ARGUMENT answers from the service)
    bert_trt_cache_hits_total / _misses_total   counters, texts answered from / not found in the prediction cache
    bert_trt_stage_ms{stage=tokenize|infer|total}  histogram per batch
    bert_trt_in_flight_requests{model}          gauge, prediction requests received and not yet answered (queued
                                                for a batch or computing); summed over worker processes. What
                                                the raw-deployment autoscaler divides by its per-replica target
                                                (deploy/kserve/custom-predictor.yaml, docs/kserve.md "Autoscaling")
KServe's own request-latency histograms are on the same endpoint.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from handler.metrics import BatchRecord, MetricsSink

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (64, 256, 1024, 4096, 16384, 65536)
MS_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 250, 1000)


class PrometheusMetrics(MetricsSink):
    """Prometheus collectors for one served model (`model` label), registered in `registry`."""

    def __init__(self, model: str, registry: CollectorRegistry = REGISTRY):
        self.model = model
        labels = ["model", "backend"]
        # one series per live worker process when several serve (kserve_server/workers.py): a "pid" label is added
        self.active_backend = Gauge("bert_trt_active_backend", "1 for the backend that answers", labels, registry=registry, multiprocess_mode="liveall")
        self.batch_requests = Histogram("bert_trt_batch_requests", "requests per batch", labels, buckets=SIZE_BUCKETS, registry=registry)
        self.batch_texts = Histogram("bert_trt_batch_texts", "texts per batch", labels, buckets=SIZE_BUCKETS, registry=registry)
        self.batch_tokens = Histogram("bert_trt_batch_tokens", "real (unpadded) tokens per batch", labels, buckets=TOKEN_BUCKETS, registry=registry)
        self.rejected = Counter("bert_trt_rejected_requests", "requests the service refused (bad input)", labels, registry=registry)
        self.cache_hits = Counter("bert_trt_cache_hits", "texts answered from the prediction cache", labels, registry=registry)
        self.cache_misses = Counter("bert_trt_cache_misses", "texts not found in the prediction cache", labels, registry=registry)
        self.stage_ms = Histogram("bert_trt_stage_ms", "milliseconds per batch and stage", [*labels, "stage"], buckets=MS_BUCKETS, registry=registry)
        # with several worker processes the scrape shows the sum over the live ones (a dead worker's requests are gone)
        # bound to this model once: every request enters and leaves it (no label lookup per request)
        self.in_flight_requests = Gauge("bert_trt_in_flight_requests", "prediction requests received and not yet answered", ["model"],
                                        registry=registry, multiprocess_mode="livesum").labels(model)  # fmt: skip
        self.in_flight_requests.set(0)  # scraped as 0 before the first request, not missing

    def backend_started(self, backend: str) -> None:
        self.active_backend.labels(self.model, backend).set(1)

    def batch_done(self, record: BatchRecord) -> None:
        labels = (self.model, record.backend)
        self.batch_requests.labels(*labels).observe(record.requests)
        self.batch_texts.labels(*labels).observe(record.texts)
        self.batch_tokens.labels(*labels).observe(record.tokens)
        self.rejected.labels(*labels).inc(record.rejected)
        self.cache_hits.labels(*labels).inc(record.cache_hits)
        self.cache_misses.labels(*labels).inc(record.texts - record.cache_hits)
        for stage, milliseconds in (("tokenize", record.tokenize_ms), ("infer", record.infer_ms), ("total", record.total_ms)):
            self.stage_ms.labels(*labels, stage).observe(milliseconds)
