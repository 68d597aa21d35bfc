"""Prometheus metrics of one app, in the app's own registry (served at `/metrics`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("rain_sessions", "Live webcam sessions", registry=r)
        self.viewers = Gauge("rain_viewers", "Live WHEP viewers", registry=r)
        self.sessions_started = Counter("rain_sessions_started", "Sessions opened", registry=r)
        self.sessions_ended = Counter("rain_sessions_ended", "Sessions closed, by reason", ["reason"], registry=r)
        self.offers_rejected = Counter("rain_offers_rejected", "Offers refused, by reason", ["reason"], registry=r)
        self.camera_frames = Counter("rain_camera_frames", "Webcam frames received", registry=r)
        self.driving_frames = Counter("rain_driving_frames", "Driving images extracted", registry=r)
        self.dropped_frames = Counter(
            "rain_dropped_driving_frames", "Driving images dropped because the model was behind", registry=r
        )
        self.output_frames = Counter("rain_output_frames", "Avatar frames produced by the engine", registry=r)
        self.repeated_frames = Counter("rain_repeated_frames", "Output ticks that repeated the last frame", registry=r)
        self.batch_size = Histogram(
            "rain_step_batch_size", "Streams stepped per UNet call", buckets=(1, 2, 3, 4, 6, 8, 12, 16), registry=r
        )
        self.step_seconds = Histogram(
            "rain_step_seconds",
            "Wall time of one batched engine step (not counting a decode left to the decode thread)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2), registry=r,
        )
        self.first_frame_seconds = Histogram(
            "rain_first_frame_seconds", "From a session's first webcam frame to its first avatar frame",
            buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32), registry=r,
        )
        self.latency_seconds = Histogram(
            "rain_latency_seconds", "From a webcam frame's arrival to its avatar frame being sent",
            buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10), registry=r,
        )

    def watch_fast_paths(self, status: Callable[[], dict[str, Any]]) -> None:
        """Publish the model's fast paths (`server.model_worker.fast_path_status`), read at each scrape."""
        self.registry.register(_FastPathCollector(status))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _FastPathCollector(Collector):
    """The fast paths as gauges: a background preparation and a warm-up check change them after start."""

    def __init__(self, status: Callable[[], dict[str, Any]]):
        self.status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self.status()
        on = GaugeMetricFamily("rain_fast_path", "1 when a fast path runs (or is being prepared to)", labels=["path"])
        dropped = GaugeMetricFamily("rain_fast_path_dropped", "1 when a fast path was switched off at warm-up "
                                    "(it raised, differed from eager or was slower; /api/health says why)",
                                    labels=["path"])
        for name, running in status["paths"].items():
            on.add_metric([name], float(running))
            dropped.add_metric([name], float(name in status["dropped"]))
        ready = GaugeMetricFamily("rain_fast_path_ready_batch_sizes",
                                  "Batch sizes whose steady call runs compiled or captured")
        preparation = status["preparation"]
        ready.add_metric([], float(len(preparation["ready_batch_sizes"]) if preparation else 0))
        yield from (on, dropped, ready)
