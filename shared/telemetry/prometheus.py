"""Prometheus text (format 0.0.4) of the in-process totals, for `GET /metrics`, with no OpenTelemetry import at all."""

from __future__ import annotations

import math
import re

from shared.telemetry.aggregate import Snapshot
from shared.telemetry.names import METRICS, Key, MetricSpec


def prometheus_name(spec: MetricSpec) -> str:
    """The OpenTelemetry-to-Prometheus name: dots to underscores, the unit as a suffix, `_total` for counters."""
    name = re.sub(r"[^A-Za-z0-9_:]", "_", spec.name)
    if spec.unit == "s":
        name += "_seconds"
    return name + "_total" if spec.kind == "counter" else name


def _label_value(value: str | int) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(spec: MetricSpec, key: Key, extra: str = "") -> str:
    pairs = [
        f'{re.sub(r"[^A-Za-z0-9_]", "_", name)}="{_label_value(value)}"'
        for name, value in zip(spec.attributes, key, strict=True)
        if value != ""
    ]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render_prometheus(snapshot: Snapshot) -> str:
    lines: list[str] = []
    for spec in METRICS:
        name = prometheus_name(spec)
        lines.append(f"# HELP {name} {spec.description}")
        lines.append(f"# TYPE {name} {spec.kind if spec.kind == 'histogram' else 'counter'}")
        if spec.kind == "counter":
            for key, value in sorted(snapshot.sums[spec.name].items(), key=_sort_key):
                lines.append(f"{name}{_labels(spec, key)} {_number(value)}")
            continue
        for key, point in sorted(snapshot.histograms[spec.name].items(), key=_sort_key):
            running = 0
            for bound, count in zip((*spec.buckets, math.inf), point.counts, strict=True):
                running += count
                lines.append(f"{name}_bucket{_labels(spec, key, f'le={_quoted(bound)}')} {running}")
            lines.append(f"{name}_sum{_labels(spec, key)} {_number(point.sum)}")
            lines.append(f"{name}_count{_labels(spec, key)} {point.count}")
    return "\n".join(lines) + "\n"


def _quoted(bound: float) -> str:
    return f'"{_number(bound)}"'


def _sort_key(item: tuple[Key, object]) -> tuple[str, ...]:
    return tuple(str(v) for v in item[0])
