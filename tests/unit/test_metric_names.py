"""Every metric that docs/operations.md lists and conf/grafana-dashboard.json queries is one
tempest/metrics.py makes, and every one it makes is documented."""

import json
import re
from pathlib import Path

from tempest import metrics

ROOT = Path(__file__).resolve().parents[2]
SOURCE = (ROOT / "tempest" / "metrics.py").read_text()
MADE = set(re.findall(r'"(tempest_[a-z_]+)"', SOURCE))  # family names, without _total
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def family(name):
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[:-len(suffix)] in MADE:
            return name[:-len(suffix)]
    return name


def documented():
    """The names of the metrics table; a cell's `_open` after `tempest_x_total` is tempest_x_open."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## Metrics and health checks", 1)[1].split("\n## ", 1)[0]
    names = set()
    for cell in re.findall(r"^\| `([^|]+)\|", section, re.M):
        base = None
        for name in re.findall(r"`(tempest_[a-z_]+|_[a-z_]+)`", "`" + cell):
            if name.startswith("tempest_"):
                base = name.removesuffix("_total")
                names.add(family(name))
            elif base is not None:
                names.add(family(base + name))
    return names


def test_the_documented_metrics_are_the_ones_made():
    assert documented() == MADE


def test_the_dashboard_queries_metrics_that_exist():
    dashboard = json.loads((ROOT / "conf" / "grafana-dashboard.json").read_text())
    queried = {family(name) for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b(tempest_[a-z_]+)", target["expr"])}
    assert queried and queried <= MADE | {"tempest_info"}, queried - MADE


def test_counter_names_follow_prometheus_conventions():
    for name, _ in metrics.COUNTERS.values():
        assert re.fullmatch(r"tempest_[a-z]+(_[a-z]+)*", name) and not name.endswith("_total"), name
