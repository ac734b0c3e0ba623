"""Prometheus metrics of the serving graph, through Ray Serve's metrics API (``ray.serve.metrics``).

Ray exports them with a ``ray_`` prefix on the metrics port of every node (scrape it with the Ray
Prometheus integration); Serve adds ``deployment``, ``replica`` and ``application`` tags. Each deployment
creates the metrics it updates in its constructor (metrics objects must be created inside the replica).
"""

from __future__ import annotations

__all__ = ["export_stream_metrics", "DecoderMetrics", "WindowerMetrics", "ClassifierMetrics", "LATENCY_BOUNDARIES_S", "BATCH_BOUNDARIES"]

#: Seconds: from a few milliseconds (one CPU batch) to a minute (a stream far behind).
LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class DecoderMetrics:
    """Frames decoded, frames dropped, reconnects (per stream) and streams per state."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Gauge

        self.frames_decoded = Counter("bigsister_frames_decoded", description="Frames decoded and preprocessed, per stream.",
                                      tag_keys=("stream",))
        self.frames_dropped = Counter("bigsister_frames_dropped", description="Frames a live stream dropped because it fell behind.",
                                      tag_keys=("stream",))
        self.reconnects = Counter("bigsister_stream_reconnects", description="Times a stream source was reopened.",
                                  tag_keys=("stream",))
        self.streams = Gauge("bigsister_streams", description="Streams by state.", tag_keys=("state",))


class WindowerMetrics:
    """Windows classified and frame-to-score latency (newest frame of a window decoded -> its scores back)."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        self.windows_classified = Counter("bigsister_windows_classified", description="Windows scored, per stream.",
                                          tag_keys=("stream",))
        self.frame_to_score = Histogram("bigsister_frame_to_score_seconds",
                                        description="Seconds from a window's newest frame leaving the stream runner to its scores.",
                                        boundaries=LATENCY_BOUNDARIES_S)
        self.classify_errors = Counter("bigsister_classify_errors", description="Windows whose classification failed.",
                                       tag_keys=("stream",))


class ClassifierMetrics:
    """Batch sizes and inference latency of the batched Classifier."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        self.batch_size = Histogram("bigsister_classifier_batch_size", description="Windows per @serve.batch call.",
                                    boundaries=BATCH_BOUNDARIES)
        self.inference = Histogram("bigsister_inference_seconds", description="Seconds of one batched forward pass.",
                                   boundaries=LATENCY_BOUNDARIES_S)
        self.windows = Counter("bigsister_classifier_windows", description="Windows classified by this replica.")


def export_stream_metrics(metrics: DecoderMetrics, statuses: dict[str, dict], exported: dict[str, tuple[int, int]]) -> None:
    """Streams per state (gauge), and each stream's reconnects and dropped frames since the last call (counters).

    ``exported`` keeps, per stream, the counts already added (updated here), so each is counted once."""
    counts: dict[str, int] = {}
    for sid, st in statuses.items():
        counts[st["state"]] = counts.get(st["state"], 0) + 1
        rec, drop = exported.get(sid, (0, 0))
        now_rec, now_drop = int(st.get("reconnects", 0)), int(st.get("frames_dropped", 0))
        if now_rec > rec:
            metrics.reconnects.inc(now_rec - rec, tags={"stream": sid})
        if now_drop > drop:
            metrics.frames_dropped.inc(now_drop - drop, tags={"stream": sid})
        exported[sid] = (max(rec, now_rec), max(drop, now_drop))
    for state in ("connecting", "live", "reconnecting", "error", "stopped"):
        metrics.streams.set(counts.get(state, 0), tags={"state": state})
