"""docs/metrics.md lists every Prometheus metric the code defines, and the Grafana dashboard queries only those.

Metrics are found in the source, not by starting Ray: every call ``Counter("name", ...)``, ``Gauge(...)`` or
``Histogram(...)`` (plain or as an attribute, e.g. ``metrics.Counter``) with a string literal for its name, in any
module of ``bigsister_ray``. The exported name is Ray's: ``ray_`` + name, ``_total`` for a counter, ``_bucket``
(with ``_sum`` and ``_count``) for a histogram.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "bigsister.json"
KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram"}


def defined_metrics() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """name -> (kind, tag keys, file) of every metric constructed in bigsister_ray/."""
    found: dict[str, tuple[str, tuple[str, ...], str]] = {}
    for path in sorted((ROOT / "bigsister_ray").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if fname not in KINDS or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue  # collections.Counter(iterable) and the like
            tags: tuple[str, ...] = ()
            for kw in node.keywords:
                if kw.arg == "tag_keys" and isinstance(kw.value, (ast.Tuple, ast.List)):
                    tags = tuple(e.value for e in kw.value.elts if isinstance(e, ast.Constant))
            rel = str(path.relative_to(ROOT))
            assert first.value not in found, f"metric {first.value!r} defined twice: {found[first.value][2]} and {rel}"
            found[first.value] = (KINDS[fname], tags, rel)
    return found


def exported(name: str, kind: str) -> str:
    """The name a Prometheus scrape of Ray shows (the ``_bucket`` series for a histogram)."""
    return "ray_" + name + {"counter": "_total", "gauge": "", "histogram": "_bucket"}[kind]


def documented_rows() -> dict[str, list[str]]:
    """First backticked name of each table row of docs/metrics.md -> the row's cells."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `ray_"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[re.match(r"`([a-z0-9_]+)`", cells[0]).group(1)] = cells
    return rows


def test_metrics_are_found_in_the_code():
    """Positive control: the finder sees the serving graph's metrics (an empty result would pass everything)."""
    metrics = defined_metrics()
    assert {"bigsister_frames_decoded", "bigsister_streams", "bigsister_frame_to_score_seconds",
            "bigsister_inference_seconds"} <= set(metrics)
    assert metrics["bigsister_streams"][:2] == ("gauge", ("state",))
    assert metrics["bigsister_frame_to_score_seconds"][0] == "histogram"


def test_every_defined_metric_is_documented_with_its_type_and_tags():
    rows = documented_rows()
    for name, (kind, tags, where) in defined_metrics().items():
        want = exported(name, kind)
        assert want in rows, f"docs/metrics.md: no row for {want} (defined in {where}); add it to the table"
        cells = rows[want]
        assert cells[1] == kind, f"docs/metrics.md: {want} is a {kind} in {where}, the table says {cells[1]!r}"
        for tag in tags:
            assert f"`{tag}`" in cells[2], f"docs/metrics.md: {want}'s tags should include `{tag}`, got {cells[2]!r}"
        if kind == "histogram":
            assert "`_sum`" in cells[0] and "`_count`" in cells[0], f"docs/metrics.md: {want} lists _sum and _count"


def test_documented_metrics_exist_in_the_code():
    """No row for a metric the code no longer defines."""
    known = {exported(n, k) for n, (k, _, _) in defined_metrics().items()}
    stale = sorted(set(documented_rows()) - known)
    assert not stale, f"docs/metrics.md documents metrics the code does not define: {stale}"


def _exprs(panels: list[dict]) -> list[str]:
    out = []
    for panel in panels:
        out += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
        out += _exprs(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def test_dashboard_parses_and_queries_only_documented_metrics():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = _exprs(dashboard["panels"])
    variables = [v["definition"] for v in dashboard.get("templating", {}).get("list", []) if v.get("definition")]
    assert exprs, "deploy/grafana/bigsister.json: no panel queries"
    doc = DOC.read_text(encoding="utf-8")
    documented = set(documented_rows())
    queried = {m for e in exprs + variables for m in re.findall(r"\bray_[a-z0-9_]+", e)}
    for metric in sorted(queried):
        base = re.sub(r"_(sum|count)$", "_bucket", metric)
        assert metric in documented or base in documented, f"the dashboard queries {metric}, not in docs/metrics.md"
        assert f"`{metric}`" in doc or f"`{base}`" in doc
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


@pytest.mark.parametrize("metric", [
    "ray_bigsister_frames_decoded_total", "ray_bigsister_frames_dropped_total", "ray_bigsister_streams",
    "ray_bigsister_windows_classified_total", "ray_bigsister_frame_to_score_seconds_bucket",
    "ray_bigsister_classifier_batch_size_bucket", "ray_bigsister_inference_seconds_bucket",
    "ray_bigsister_stream_reconnects_total",
])
def test_dashboard_has_a_panel_for(metric):
    exprs = _exprs(json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"])
    assert any(metric in e for e in exprs), f"deploy/grafana/bigsister.json: no panel queries {metric}"


def test_frame_to_score_panel_shows_p50_and_p95():
    exprs = _exprs(json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"])
    latency = [e for e in exprs if "frame_to_score_seconds_bucket" in e]
    assert any("histogram_quantile(0.5," in e for e in latency)
    assert any("histogram_quantile(0.95," in e for e in latency)
