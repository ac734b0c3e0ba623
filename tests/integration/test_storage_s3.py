"""Datasets and checkpoints on S3, through a local S3 server on 127.0.0.1 (tests/_s3_server.py)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from bigsister_ray import storage

from tests._s3_server import s3_server


@pytest.fixture()
def s3(monkeypatch):
    """A real S3 API (moto's server) on 127.0.0.1 with bucket 'bkt'; pyarrow finds it via AWS_ENDPOINT_URL_S3."""
    with s3_server("bkt") as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        yield server


def test_s3_roundtrip_through_pyarrow(s3, tmp_path):
    fs, path = storage.resolve("s3://bkt/bigsister/prepared")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bkt/bigsister/prepared"
    storage.write_text("s3://bkt/bigsister/prepared/manifest.json", '{"a": 1}')
    pq.write_table(pa.table({"x": list(range(100))}), "bkt/bigsister/prepared/shards/train/s-0.parquet", filesystem=fs)
    assert storage.read_text("s3://bkt/bigsister/prepared/manifest.json") == '{"a": 1}'
    assert storage.list_files("s3://bkt/bigsister/prepared", suffix=".parquet") == [
        "s3://bkt/bigsister/prepared/shards/train/s-0.parquet"
    ]
    # local -> S3 -> local, a folder at a time (what a checkpoint upload/download is)
    ckpt = tmp_path / "ckpt"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "model.pt").write_bytes(b"\x00weights")
    (ckpt / "sub" / "meta.json").write_text("{}")
    storage.copy(ckpt, "s3://bkt/runs/r1/checkpoint")
    assert storage.exists("s3://bkt/runs/r1/checkpoint/sub/meta.json")
    storage.copy("s3://bkt/runs/r1/checkpoint", tmp_path / "back")
    assert (tmp_path / "back" / "model.pt").read_bytes() == b"\x00weights"
    assert (tmp_path / "back" / "sub" / "meta.json").read_text() == "{}"
    with pytest.raises(FileNotFoundError, match="s3://bkt/runs/none"):
        storage.read_bytes("s3://bkt/runs/none")
    kw = storage.train_storage("s3://bkt/runs")
    assert kw["storage_path"] == "bkt/runs" and isinstance(kw["storage_filesystem"], pafs.S3FileSystem)


def test_s3_failed_write_leaves_no_object_and_upload_is_whole(s3, tmp_path):
    """pyarrow's S3 stream completes the upload when its `with` block exits on an error; open_output must not."""
    with pytest.raises(RuntimeError):
        with storage.open_output("s3://bkt/partial.bin") as f:
            f.write(b"first half")
            raise RuntimeError("the writer failed half-way")
    assert not storage.exists("s3://bkt/partial.bin")
    assert not any(k.startswith("partial") for k in s3.keys())
    with storage.open_output("s3://bkt/whole.bin") as f:
        f.write(b"a" * 1000)
    assert s3.keys() == {"whole.bin": 1000}
    local = tmp_path / "blob"
    local.write_bytes(b"b" * 4096)
    storage.upload(local, "s3://bkt/dir/blob")
    assert s3.keys("dir/") == {"dir/blob": 4096}
    fs, path = storage.resolve("s3://bkt/dir/blob2")
    storage.upload(local, path, filesystem=fs)
    assert storage.read_bytes("s3://bkt/dir/blob2") == local.read_bytes()


def test_self_contained_uri_reaches_the_server_without_environment(s3, monkeypatch):
    """Endpoint and keys in the URI: what a Ray worker that never saw AWS_* uses (see tests/_s3_server.py)."""
    for key in s3.env():
        monkeypatch.delenv(key)
    uri = s3.uri("runs/r1")
    assert "testing" not in storage.redact_uri(uri)
    storage.write_text(storage.join(uri, "history.jsonl"), "{}\n")
    assert s3.keys("runs/") == {"runs/r1/history.jsonl": 3}
    listed = storage.list_files(uri)
    assert listed == [s3.uri("runs/r1/history.jsonl")]  # the user@ part and the query are kept
    assert storage.read_text(listed[0]) == "{}\n"
    assert storage.parent(uri) == s3.uri("runs") and storage.basename(uri) == "r1"


def test_checkpoint_on_s3_is_read_and_updated_whole(s3, tmp_path):
    """checkpoint_file: a local copy of an s3:// checkpoint (or of its folder); write_back uploads a changed copy."""
    import torch

    from bigsister_ray.clip import ClipSpec
    from bigsister_ray.errors import CheckpointError
    from bigsister_ray.models import build_model, get_model_spec
    from bigsister_ray.models.checkpoint import (CheckpointMeta, checkpoint_file, read_checkpoint_meta,
                                                 resolve_checkpoint_path, save_checkpoint, update_checkpoint_meta)

    torch.manual_seed(0)
    meta = CheckpointMeta(model_name="tiny3d", labels=["fight", "normal"], clip=ClipSpec(frames=8, fps=8.0, size=32, stride=4),
                          norm=get_model_spec("tiny3d").norm, epoch=3)
    local = save_checkpoint(tmp_path / "model.pt", build_model("tiny3d", 2), meta)
    storage.upload(local, "s3://bkt/runs/r1/best/model.pt")
    with pytest.raises(CheckpointError, match=r"s3://bkt/runs/r1/best/model.pt is on an object store.*checkpoint_file"):
        resolve_checkpoint_path("s3://bkt/runs/r1/best/model.pt")
    for uri in ("s3://bkt/runs/r1/best/model.pt", "s3://bkt/runs/r1/best"):  # the file, or its folder
        with checkpoint_file(uri) as path:
            assert read_checkpoint_meta(path).epoch == 3
    etag = s3.client().head_object(Bucket="bkt", Key="runs/r1/best/model.pt")["ETag"]
    with checkpoint_file("s3://bkt/runs/r1/best/model.pt") as path:  # no write_back: changes stay local
        update_checkpoint_meta(path, temperature=2.0)
    assert s3.client().head_object(Bucket="bkt", Key="runs/r1/best/model.pt")["ETag"] == etag
    with checkpoint_file("s3://bkt/runs/r1/best/model.pt", write_back=True) as path:
        update_checkpoint_meta(path, temperature=2.0)
    with checkpoint_file("s3://bkt/runs/r1/best/model.pt") as path:
        assert read_checkpoint_meta(path).temperature == 2.0
    with pytest.raises(RuntimeError):  # an error in the block uploads nothing
        with checkpoint_file("s3://bkt/runs/r1/best/model.pt", write_back=True) as path:
            update_checkpoint_meta(path, temperature=3.0)
            raise RuntimeError("calibration failed")
    with checkpoint_file("s3://bkt/runs/r1/best/model.pt") as path:
        assert read_checkpoint_meta(path).temperature == 2.0
    with pytest.raises(CheckpointError, match=r"s3://bkt/runs/none/model.pt does not exist"):
        with checkpoint_file("s3://bkt/runs/none/model.pt"):
            pass
