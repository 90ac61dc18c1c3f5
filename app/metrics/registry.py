"""The process's own metrics (HTTP, prediction) in one registry, and the scrape that joins them
with an app's database collector."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # no `_created` series beside every counter and histogram: half the text, no use here
PROCESS = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    PROCESS.register(_collector)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Joined:
    """What generate_latest needs (``collect``) over several registries or collectors."""

    def __init__(self, *parts):
        self.parts = parts

    def collect(self):
        for part in self.parts:
            yield from part.collect()


def exposition(*collectors) -> bytes:
    """The Prometheus text format of this process's metrics followed by ``collectors``' own."""
    return generate_latest(_Joined(PROCESS, *collectors))
