"""Prometheus metrics of one app (its own registry, so several apps in a process don't clash).

Per worker process: with ``--workers N`` each worker reports its own counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Requests, latency per route, faces detected, and gallery sizes (read when scraped).

    Args:
        gallery_sizes: returns ``{name: (identities, templates)}`` of the open galleries.
    """

    def __init__(self, gallery_sizes: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "npcface_requests",
            "HTTP requests served",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "npcface_request_seconds",
            "Time from request to response, per route",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.faces = Counter(
            "npcface_faces_detected", "Faces detected in request images", registry=self.registry
        )
        self.images = Counter(
            "npcface_images", "Images received in requests", registry=self.registry
        )
        self.registry.register(_GalleryCollector(gallery_sizes))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _GalleryCollector:
    def __init__(self, sizes: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self.sizes = sizes

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ident = GaugeMetricFamily(
            "npcface_gallery_identities", "Identities in an open gallery", labels=["gallery"]
        )
        templ = GaugeMetricFamily(
            "npcface_gallery_templates", "Templates in an open gallery", labels=["gallery"]
        )
        for name, (n_ident, n_templ) in sorted(self.sizes().items()):
            ident.add_metric([name], n_ident)
            templ.add_metric([name], n_templ)
        yield ident
        yield templ
