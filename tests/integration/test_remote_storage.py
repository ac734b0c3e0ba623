"""The whole chain on an object store: synth -> prepare to s3:// -> resume -> train to s3:// -> resume -> evaluate.

A real S3 API (moto's server on 127.0.0.1, :mod:`tests._s3_server`) and the shared local Ray. Ray Data tasks
upload their shards, Ray Train writes checkpoints through the S3 filesystem, rank 0 rewrites history.jsonl in
the bucket, and evaluation reads the checkpoint and the shards from the bucket and writes its report there.
What is in the bucket is checked with boto3, independently of pyarrow.

The URIs carry the endpoint and moto's dummy keys (``S3Server.uri``): the shared Ray started before this
server, so its worker processes have no ``AWS_*`` variables (on a cluster the nodes' environment provides them).
"""

from __future__ import annotations

import json

import pytest

from bigsister_ray import storage
from bigsister_ray.config import Settings
from tests._s3_server import s3_server


def _settings(**train) -> Settings:
    return Settings.model_validate({
        "clip": {"frames": 8, "fps": 4.0, "size": 32, "stride": 4},
        "task": {"labels": ["normal", "fight", "assault"]},
        "data": {"clips_per_event": 2, "negatives_per_video": 1, "negative_margin_s": 0.5, "shard_clips": 6,
                 "split": (0.4, 0.3, 0.3)},
        "model": {"name": "tiny3d", "dropout": 0.0},
        "train": {"workers": 1, "epochs": 1, "batch_size": 4, "cpus_per_worker": 1, "max_failures": 0,
                  "augment": False, "early_stopping_patience": 50, **train},
        "ray": {"num_cpus": 2},
    })


@pytest.fixture(scope="module")
def s3():
    with s3_server("bkt") as server:
        yield server


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    from bigsister_ray.data.synth import synthesize

    root = tmp_path_factory.mktemp("raw") / "aihub"
    synthesize(root, videos=8, seconds=4.0, seed=0, settings=_settings(), size=(64, 48))
    return root


@pytest.fixture(scope="module")
def prepared(ray_local, s3, raw):
    """prepare to s3://bkt/prep, then again: the second run finds every shard done and redoes none."""
    from bigsister_ray.data.pipeline import prepare

    out = s3.uri("prep")
    first = prepare("aihub", raw, out, _settings(), progress=None)
    assert first.clips_written > 0 and first.shards_written == first.shards_total > 0
    assert "testing" not in first.out and first.out.startswith("s3://")  # the keys never reach a printed line
    before = {k: v for k, v in s3.keys("prep/").items()}
    etags = {o["Key"]: o["ETag"] for o in s3.client().list_objects_v2(Bucket="bkt", Prefix="prep/shards/")["Contents"]}
    again = prepare("aihub", raw, out, _settings(), progress=None)
    assert again.shards_written == 0 and again.shards_resumed == first.shards_total
    assert (again.clips_written, again.clips_failed) == (first.clips_written, first.clips_failed)
    after = {o["Key"]: o["ETag"] for o in s3.client().list_objects_v2(Bucket="bkt", Prefix="prep/shards/")["Contents"]}
    assert after == etags and s3.keys("prep/").keys() == before.keys()
    return out, first


def test_prepare_writes_the_dataset_into_the_bucket(prepared, s3):
    from bigsister_ray.data.prepared import read_manifest

    out, summary = prepared
    keys = s3.keys("prep/")
    for name in ("manifest.json", "index.jsonl", "errors.jsonl", "errors.md"):
        assert f"prep/{name}" in keys, sorted(keys)
    manifest = read_manifest(out)
    assert manifest.clips_written == summary.clips_written
    assert {s.split for s in manifest.shards} == {"train", "val", "test"}, manifest.counts
    for shard in manifest.shards:
        assert keys[f"prep/{shard.path}"] == shard.bytes > 0  # the size the task reported is the object's
    assert not [k for k in keys if k.endswith(".tmp")]  # tasks upload whole files, never temporaries


def test_a_lost_or_stray_shard_on_s3_is_redone_or_removed(prepared, s3, raw):
    """Resume on the store: a deleted shard is written again, a shard from another plan is deleted."""
    from bigsister_ray.data.pipeline import prepare
    from bigsister_ray.data.prepared import read_manifest

    out, summary = prepared
    victim = read_manifest(out).shards[0].path
    client = s3.client()
    client.delete_object(Bucket="bkt", Key=f"prep/{victim}")
    client.put_object(Bucket="bkt", Key="prep/shards/train/shard-09999.parquet", Body=b"not in this plan")
    third = prepare("aihub", raw, out, _settings(), progress=None)
    assert third.shards_written == 1 and third.clips_written == summary.clips_written
    keys = s3.keys("prep/")
    assert f"prep/{victim}" in keys and "prep/shards/train/shard-09999.parquet" not in keys


@pytest.fixture(scope="module")
def trained(prepared, s3):
    """Train one epoch into s3://bkt/runs/r1, then a second call with 2 epochs resumes it from the bucket."""
    from bigsister_ray.train.trainer import train

    data, _ = prepared
    out = s3.uri("runs/r1")
    first = train(data, out, _settings(epochs=1))
    second = train(data, out, _settings(epochs=2))
    return out, first, second


def test_training_writes_checkpoints_history_and_best_model_to_the_bucket(trained, s3):
    from bigsister_ray.models.checkpoint import checkpoint_file, read_checkpoint_meta
    from bigsister_ray.train.trainer import read_history

    out, first, second = trained
    assert first.name == "r1" and first.last_epoch == 1 and first.epochs_this_call == 1
    assert first.best_checkpoint == storage.join(out, "best", "model.pt")
    keys = s3.keys("runs/")
    assert "runs/r1/best/model.pt" in keys and "runs/r1/history.jsonl" in keys and "runs/r1/result.json" in keys
    ray_checkpoints = [k for k in keys if k.startswith("runs/r1/checkpoint_") and k.endswith("/model.pt")]
    assert len(ray_checkpoints) >= 2, sorted(keys)  # Ray Train's own per-epoch checkpoints, in the bucket
    result = json.loads(s3.client().get_object(Bucket="bkt", Key="runs/r1/result.json")["Body"].read())
    assert result["run_dir"] == "s3://***@bkt/runs/r1?endpoint_override=" + s3.endpoint  # keys redacted
    # the calibrated best checkpoint was uploaded
    with checkpoint_file(second.best_checkpoint) as local:
        meta = read_checkpoint_meta(local)
    assert meta.labels == ["normal", "fight", "assault"] and meta.metrics["calibration"]["val_clips"] > 0

    # the second call resumed from the bucket: epoch 1 once, then the resume event, then epoch 2
    assert second.resumed_from_epoch == 1 and second.epochs_this_call == 1 and second.last_epoch == 2
    events = [(h["event"], h.get("epoch", h.get("from_epoch"))) for h in read_history(out)]
    assert events == [("epoch", 1), ("resumed", 1), ("epoch", 2)], events


def test_evaluate_reads_the_checkpoint_and_data_from_s3_and_writes_the_report_there(trained, prepared, s3):
    from bigsister_ray.models.checkpoint import checkpoint_file, read_checkpoint_meta, update_checkpoint_meta
    from bigsister_ray.train.evaluate import evaluate

    data, _ = prepared
    _, _, second = trained
    checkpoint = second.best_checkpoint
    with checkpoint_file(checkpoint, write_back=True) as local:  # forget the calibration, in the bucket
        metrics = {k: v for k, v in read_checkpoint_meta(local).metrics.items() if k != "calibration"}
        update_checkpoint_meta(local, temperature=1.0, thresholds={}, metrics=metrics)
    with checkpoint_file(checkpoint) as local:
        assert "calibration" not in read_checkpoint_meta(local).metrics

    res = evaluate(checkpoint, data, s3.uri("eval/r1"), _settings(), split="test")
    keys = s3.keys("eval/")
    for name in ("metrics.json", "report.md", "confusion.png", "reliability.png"):
        assert f"eval/r1/{name}" in keys, sorted(keys)
    assert res.metrics_path == s3.uri("eval/r1/metrics.json") and res.n > 0
    metrics = json.loads(s3.client().get_object(Bucket="bkt", Key="eval/r1/metrics.json")["Body"].read())
    assert metrics["n"] == res.n and metrics["labels"] == ["normal", "fight", "assault"]
    assert "testing" not in metrics["checkpoint"] and metrics["checkpoint"].endswith("bkt/runs/r1/best/model.pt?endpoint_override=" + s3.endpoint)
    assert "testing" not in str(res)
    report = s3.client().get_object(Bucket="bkt", Key="eval/r1/report.md")["Body"].read().decode()
    assert "Per class" in report and "testing:testing" not in report
    # evaluation calibrated on validation and stored it back into the checkpoint in the bucket
    with checkpoint_file(checkpoint) as local:
        meta = read_checkpoint_meta(local)
    calibration = meta.metrics["calibration"]
    assert calibration["val_clips"] > 0 and meta.temperature == calibration["temperature"]
    assert meta.thresholds == calibration["thresholds"]
