"""The avatar replicas' Prometheus figures in one exposition, each sample labelled with its replica.

Each replica renders its own registry (`server.metrics.Metrics`); the ingress parses those texts
with prometheus_client's parser and writes them back out as one, the `replica` label added, so a
scrape of `/metrics` on any ingress replica sees the whole cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

REPLICA_LABEL = "replica"


class _Labelled(Collector):
    def __init__(self, texts: dict[str, bytes]):
        self.texts = texts

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for replica, text in self.texts.items():
            for family in text_string_to_metric_families(text.decode("utf-8")):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                for sample in family.samples:
                    merged.add_sample(
                        sample.name, {**sample.labels, REPLICA_LABEL: replica}, sample.value, sample.timestamp,
                        sample.exemplar,
                    )
        yield from families.values()


def labelled_exposition(texts: dict[str, bytes]) -> bytes:
    """Prometheus texts by replica -> one text, every sample with `replica="..."`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Labelled(texts))
    return generate_latest(registry)
