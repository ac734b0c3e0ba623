"""bigsister_ray.storage on local folders and on a real S3 API (moto's server on 127.0.0.1) through pyarrow."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from bigsister_ray import storage
from bigsister_ray.errors import ConfigError


def test_resolve_local_and_file_uri(tmp_path):
    fs, path = storage.resolve(tmp_path / "a")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "a")
    fs, path = storage.resolve(f"file://{tmp_path}/with%20space")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/with space"
    assert not storage.is_remote(tmp_path) and storage.is_remote("s3://b/k") and storage.is_remote("gs://b/k")


def test_resolve_gcs_without_network():
    fs, path = storage.resolve("gs://some-bucket/bigsister/runs/")
    assert type(fs).__name__ == "GcsFileSystem" and path == "some-bucket/bigsister/runs"


@pytest.mark.parametrize(
    "uri, expected",
    [("", "empty"), ("ftp://host/x", "unsupported scheme 'ftp'"), ("s3:///key-without-bucket", "names no bucket"),
     ("file://otherhost/x", "name no host")],
)
def test_resolve_refuses_bad_uris_with_what_to_do(uri, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        storage.resolve(uri)
    if uri:
        assert "expected" in str(info.value)


def test_redact_uri_hides_credentials():
    s = storage.redact_uri("s3://AKIA:verysecret@bucket/k?region=x&secret_key=abc&token=t")
    assert "verysecret" not in s and "abc" not in s and "=t" not in s
    assert s.startswith("s3://***@bucket/k?region=x")


def test_local_roundtrip_list_copy_delete(tmp_path):
    root = tmp_path / "ds"
    storage.write_text(storage.join(str(root), "shards", "train", "a.parquet"), "A")
    storage.write_bytes(storage.join(str(root), "manifest.json"), b"{}")
    assert storage.read_text(root / "shards" / "train" / "a.parquet") == "A"
    assert storage.exists(root) and storage.is_dir(root) and not storage.is_dir(root / "manifest.json")
    assert storage.list_files(root) == [str(root / "manifest.json"), str(root / "shards/train/a.parquet")]
    assert storage.list_files(root, suffix=".json") == [str(root / "manifest.json")]
    storage.copy(root, tmp_path / "copy")
    assert storage.read_bytes(tmp_path / "copy" / "manifest.json") == b"{}"
    storage.copy(root / "manifest.json", tmp_path / "one" / "m.json")
    assert (tmp_path / "one" / "m.json").read_bytes() == b"{}"
    storage.delete(root)
    assert not storage.exists(root)
    with pytest.raises(FileNotFoundError):
        storage.delete(root, missing_ok=False)


def test_missing_inputs_name_the_uri(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        storage.read_bytes(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="no-folder"):
        storage.list_files(tmp_path / "no-folder")
    with pytest.raises(FileNotFoundError, match="nothing to copy"):
        storage.copy(tmp_path / "absent", tmp_path / "dst")


def test_join_keeps_scheme_and_query():
    assert storage.join("s3://b/base?region=eu-west-1", "runs", "x") == "s3://b/base/runs/x?region=eu-west-1"
    assert storage.join("gs://b", "a") == "gs://b/a"


def test_train_storage_gives_runconfig_kwargs(tmp_path):
    kw = storage.train_storage(tmp_path / "runs")
    assert kw["storage_path"] == str(tmp_path / "runs") and isinstance(kw["storage_filesystem"], pafs.LocalFileSystem)


# ------------------------------------------------------------------------- shared storage


def test_local_path_refused_on_a_multi_machine_cluster(tmp_path):
    with pytest.raises(ConfigError) as info:
        storage.check_shared_storage(tmp_path / "prepared", what="--data", hosts=["10.0.0.1", "10.0.0.2"])
    msg = str(info.value)
    assert "--data" in msg and str(tmp_path / "prepared") in msg and "2 machines" in msg
    assert "s3://" in msg and "NFS" in msg


def test_shared_storage_passes_on_one_machine_and_for_buckets(tmp_path):
    storage.check_shared_storage(tmp_path, hosts=["10.0.0.1"])
    storage.check_shared_storage(tmp_path)  # Ray not initialised: a local Ray would start on this machine
    storage.check_shared_storage("s3://bucket/prepared", hosts=["10.0.0.1", "10.0.0.2"])
    with pytest.raises(ConfigError, match="unsupported scheme"):
        storage.check_shared_storage("ftp://x/y", hosts=["10.0.0.1", "10.0.0.2"])


def test_network_filesystems_count_as_shared():
    mounts = [line.split() for line in open("/proc/mounts").read().splitlines()]
    network = [m for m in mounts if m[2] in storage.NETWORK_FILESYSTEMS or m[2].startswith("fuse.")]
    local = [m for m in mounts if m[1] == "/"]
    assert local, "no root mount in /proc/mounts"
    root_type = local[-1][2]  # the last mount on "/" is the visible one
    assert storage.is_on_network_filesystem("/") == (root_type in storage.NETWORK_FILESYSTEMS or root_type.startswith("fuse."))
    for m in network[:1]:  # where this machine has one, a path under it is shared storage
        assert storage.is_on_network_filesystem(m[1] + "/some/new/folder")
        storage.check_shared_storage(m[1] + "/x", hosts=["a", "b"])


# ------------------------------------------------------------------------- S3 over HTTP


def test_local_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "manifest.json"
    storage.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with storage.open_output(target) as f:
            f.write(b"new but cut")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["manifest.json"]  # no temporary file left
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # umask permissions, not mkstemp's 0600


def test_parent_and_basename():
    assert storage.parent("s3://b/runs/r1?region=x") == "s3://b/runs?region=x"
    assert storage.parent("gs://b/r1/") == "gs://b" and storage.basename("gs://b/r1/") == "r1"
    assert storage.basename("s3://b/runs/r1?endpoint_override=http://127.0.0.1:9000") == "r1"
    assert storage.parent("/data/runs/r1") == "/data/runs" and storage.basename("/data/runs/r1") == "r1"


def test_gcs_run_storage_resolves_without_network():
    kw = storage.train_storage("gs://some-bucket/bigsister/runs")
    assert type(kw["storage_filesystem"]).__name__ == "GcsFileSystem" and kw["storage_path"] == "some-bucket/bigsister/runs"


def test_prepare_refuses_a_bucket_as_the_video_root(tmp_path):
    from bigsister_ray.data.pipeline import prepare

    with pytest.raises(ConfigError, match=r"--root 's3://bkt/aihub' is an object-store URI.*Mount the bucket.*sync"):
        prepare("aihub", "s3://bkt/aihub", tmp_path / "out", progress=None)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_cli_prepare_with_a_bucket_root_says_what_to_do(tmp_path):
    from typer.testing import CliRunner

    from bigsister_ray.cli import app

    res = CliRunner().invoke(app, ["prepare", "--source", "folders", "--root", "gs://bkt/videos", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "gs://bkt/videos" in res.output and "mount" in res.output.lower()


MOUNTS = """overlay / overlay rw,relatime,lowerdir=/l,upperdir=/u,workdir=/w 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/nvme0n1p1 /mnt/bigsister ext4 rw,relatime 0 0
fs-0123.efs.us-west-2.amazonaws.com:/ /mnt/bigsister nfs4 rw,relatime,vers=4.1,hard 0 0
gcsfuse /mnt/gcs fuse.gcsfuse rw,nosuid,nodev 0 0
/dev/nvme1n1 /mnt/bigsister/scratch xfs rw 0 0
"""

@pytest.mark.parametrize(
    "path, shared",
    [("/mnt/bigsister/prepared/not/created/yet", True),   # NFS mounted over the local disk: the later mount wins
     ("/mnt/bigsister", True),
     ("/mnt/bigsister/scratch/x", False),                 # a local disk mounted below the share
     ("/mnt/bigsisterX/runs", False),                     # a prefix of the name is not the mount point
     ("/mnt/gcs/bucket/runs", True),                      # FUSE bucket mount
     ("/home/user/runs", False)],
)
def test_mount_table_decides_what_is_shared(path, shared):
    assert storage.is_on_network_filesystem(path, mounts_text=MOUNTS) is shared
