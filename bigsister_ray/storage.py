"""Where datasets, runs and checkpoints live: a local path or an ``s3://`` / ``gs://`` URI, through pyarrow.fs.

Every stage addresses its inputs and outputs with one string. :func:`resolve` turns it into a pyarrow
filesystem and a path on it; the helpers below (open, list, copy, exists) work the same on a laptop folder, an
NFS mount, S3 (or an S3-compatible store) and Google Cloud Storage::

    resolve("runs/exp1")                       -> (LocalFileSystem, "/abs/path/runs/exp1")
    resolve("file:///data/prepared")           -> (LocalFileSystem, "/data/prepared")
    resolve("s3://bucket/bigsister/prepared")  -> (S3FileSystem, "bucket/bigsister/prepared")
    resolve("gs://bucket/bigsister/runs")      -> (GcsFileSystem, "bucket/bigsister/runs")

Credentials come from the usual places, never from the URI you pass around: for S3 the AWS chain (instance
profile, ``AWS_*`` environment, ``~/.aws``), with ``AWS_ENDPOINT_URL_S3`` (or ``?endpoint_override=`` in the URI)
for MinIO and other S3-compatible stores; for GCS the Google application-default credentials.

On a cluster the nodes share no disk. :func:`check_shared_storage` is what a stage calls once it is connected to
Ray: when the cluster spans more than one machine, a local path that is not on a network filesystem (NFS, EFS,
CIFS, Lustre, a FUSE bucket mount, ...) is refused before any work starts, with an explanation, instead of each
node silently writing its own half of a dataset or checkpoint.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs

from bigsister_ray.errors import ConfigError
from bigsister_ray.redact import redact_url

__all__ = [
    "REMOTE_SCHEMES",
    "NETWORK_FILESYSTEMS",
    "is_remote",
    "redact_uri",
    "resolve",
    "join",
    "exists",
    "is_dir",
    "makedirs",
    "open_input",
    "open_output",
    "upload",
    "parent",
    "basename",
    "read_bytes",
    "write_bytes",
    "read_text",
    "write_text",
    "list_files",
    "copy",
    "delete",
    "train_storage",
    "cluster_hosts",
    "is_on_network_filesystem",
    "check_shared_storage",
]

#: URI schemes served by a remote object store (shared by every node by construction).
REMOTE_SCHEMES: frozenset[str] = frozenset({"s3", "gs", "gcs"})

#: Filesystem types (as in /proc/mounts) that every node of a cluster can mount: a local path on one of these
#: is shared storage. ``fuse.*`` types (gcsfuse, s3fs, juicefs, ...) are accepted too.
NETWORK_FILESYSTEMS: frozenset[str] = frozenset(
    {"nfs", "nfs4", "cifs", "smbfs", "smb3", "lustre", "glusterfs", "ceph", "cephfs", "beegfs", "gpfs",
     "9p", "virtiofs", "afs", "ocfs2", "gfs2", "efs", "wekafs", "panfs"}
)

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SUPPORTED = "a local path, file://, s3:// or gs://"


def _scheme(uri: str) -> str | None:
    m = _SCHEME_RE.match(uri)
    return m.group(1).lower() if m else None


def redact_uri(uri: str | os.PathLike[str]) -> str:
    """``uri`` without credentials (the rules of :func:`bigsister_ray.redact.redact_url`)."""
    return redact_url(uri)


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """True for ``s3://`` / ``gs://`` URIs; False for local paths and ``file://``."""
    return _scheme(os.fspath(uri)) in REMOTE_SCHEMES


def _local_path(uri: str) -> str:
    if _scheme(uri) == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"storage URI {redact_uri(uri)!r}: file:// URIs name no host, expected file:///absolute/path")
        return os.path.abspath(unquote(parts.path))
    return os.path.abspath(os.path.expanduser(uri))


def _check_uri(s: str) -> str | None:
    """The scheme of ``s`` (None for a plain path) after checking its form, without touching any network."""
    if not s.strip():
        raise ConfigError(f"storage path is empty, expected {_SUPPORTED}")
    scheme = _scheme(s)
    if scheme is None:
        return None
    if scheme == "file":
        _local_path(s)
        return scheme
    if scheme not in REMOTE_SCHEMES:
        raise ConfigError(f"storage URI {redact_uri(s)!r}: unsupported scheme {scheme!r}, expected {_SUPPORTED}")
    if not urlsplit(s).netloc:
        raise ConfigError(f"storage URI {redact_uri(s)!r} names no bucket, expected {scheme}://BUCKET/path")
    return scheme


def resolve(uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path for ``uri`` (a local path, ``file://``, ``s3://`` or ``gs://``/``gcs://``).

    S3 filesystems open objects lazily (``allow_delayed_open``), so a small file is one PUT, not a multipart
    upload. Raises :class:`ConfigError` for an empty or unsupported URI.
    """
    s = os.fspath(uri)
    scheme = _check_uri(s)
    if scheme is None or scheme == "file":
        return pafs.LocalFileSystem(), _local_path(s)
    parts = urlsplit(s)
    if scheme == "s3" and "allow_delayed_open" not in parts.query:
        s = s + ("&" if parts.query else "?") + "allow_delayed_open=true"
    try:
        fs, path = pafs.FileSystem.from_uri(s)
    except (ValueError, OSError) as err:  # pyarrow.ArrowInvalid is a ValueError
        raise ConfigError(f"storage URI {redact_uri(uri)!r}: {err}") from err
    return fs, path.rstrip("/")


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """``base`` / ``parts`` joined with ``/``, keeping a URI's scheme and query (``?region=...``)."""
    s = os.fspath(base)
    scheme = _scheme(s)
    if scheme is None:
        return str(Path(s).joinpath(*parts))
    split = urlsplit(s)
    path = str(PurePosixPath(split.path or "/").joinpath(*parts))
    out = f"{split.scheme}://{split.netloc}{path}"
    return f"{out}?{split.query}" if split.query else out


def _to_uri(template: str, fs_path: str) -> str:
    """The URI (same scheme, ``user@`` part and query as ``template``) of ``fs_path`` on the template's filesystem."""
    scheme = _scheme(template)
    if scheme is None or scheme == "file":
        return fs_path
    split = urlsplit(template)
    userinfo = split.netloc.rpartition("@")[0]
    return f"{scheme}://" + (f"{userinfo}@" if userinfo else "") + fs_path + (f"?{split.query}" if split.query else "")


def parent(uri: str | os.PathLike[str]) -> str:
    """The folder holding ``uri`` (same scheme and query); for a local path, its parent as a string."""
    s = os.fspath(uri)
    if _scheme(s) is None:
        return str(Path(s).parent)
    split = urlsplit(s)
    path = str(PurePosixPath(split.path.rstrip("/") or "/").parent)
    out = f"{split.scheme}://{split.netloc}{'' if path == '/' else path}"
    return f"{out}?{split.query}" if split.query else out


def basename(uri: str | os.PathLike[str]) -> str:
    """The last component of ``uri``'s path (never part of its query): ``s3://b/runs/r1?region=x`` -> ``r1``."""
    s = os.fspath(uri)
    if _scheme(s) is None:
        return Path(s).name
    return PurePosixPath(urlsplit(s).path.rstrip("/")).name


def _info(uri: str | os.PathLike[str]) -> pafs.FileInfo:
    fs, path = resolve(uri)
    return fs.get_file_info(path)


def exists(uri: str | os.PathLike[str]) -> bool:
    """Whether a file or folder exists at ``uri``."""
    return _info(uri).type != pafs.FileType.NotFound


def is_dir(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` is a folder (on object stores: a prefix with objects under it)."""
    return _info(uri).type == pafs.FileType.Directory


def makedirs(uri: str | os.PathLike[str]) -> None:
    """Create the folder ``uri`` and its parents (a no-op where it exists)."""
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)


def _not_found(uri: str | os.PathLike[str], err: Exception) -> FileNotFoundError:
    return FileNotFoundError(f"{redact_uri(uri)}: no such file ({err})")


@contextmanager
def open_input(uri: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open ``uri`` for reading bytes. Raises FileNotFoundError naming the URI."""
    fs, path = resolve(uri)
    try:
        stream = fs.open_input_file(path)
    except FileNotFoundError as err:
        raise _not_found(uri, err) from err
    with stream:
        yield stream


@contextmanager
def open_output(uri: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open ``uri`` for writing bytes (replacing it); a local parent folder is created.

    The new content appears at ``uri`` only when the block exits without an error, whole or not at all: a local
    file is written under a temporary name beside it and renamed; for an object store the bytes go to a local
    temporary file first and are uploaded in one call (:func:`upload`). pyarrow's own S3 output stream cannot do
    this: leaving its ``with`` block on an exception closes the stream, which *completes* the upload, so a
    half-written object would appear at the final name.
    """
    fs, path = resolve(uri)
    local = isinstance(fs, pafs.LocalFileSystem)
    folder, name = os.path.split(path)
    if local:
        os.makedirs(folder, exist_ok=True)
    # open(..., "xb") rather than mkstemp: the file gets the usual umask permissions, not 0600
    tmp = os.path.join(folder if local else tempfile.gettempdir(), f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            yield f
        if isinstance(fs, pafs.LocalFileSystem):
            os.replace(tmp, path)
        else:
            upload(tmp, path, filesystem=fs)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def upload(local_path: str | os.PathLike[str], dst: str | os.PathLike[str], *,
           filesystem: pafs.FileSystem | None = None) -> None:
    """Copy the complete local file ``local_path`` to ``dst`` (a URI, or a path on ``filesystem``).

    One pyarrow call does the transfer, so no Python exception (a cancelled Ray task, Ctrl-C) can land between
    two writes and leave part of the file behind; on an object store the object appears when its upload
    completes. The size is checked afterwards: a short object (the local file changed or could not be read
    mid-copy) is deleted and the copy fails.
    """
    if filesystem is None:
        filesystem, dst_path = resolve(dst)
    else:
        dst_path = os.fspath(dst)
    src = os.path.abspath(os.fspath(local_path))
    size = os.path.getsize(src)
    if isinstance(filesystem, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(dst_path), exist_ok=True)
    pafs.copy_files(src, dst_path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=filesystem)
    written = filesystem.get_file_info(dst_path).size
    if written != size:
        filesystem.delete_file(dst_path)
        raise OSError(f"upload of {src} to {redact_uri(dst)} wrote {written} bytes, expected {size}; removed it")


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    with open_input(uri) as f:
        return f.read()


def write_bytes(uri: str | os.PathLike[str], data: bytes) -> None:
    with open_output(uri) as f:
        f.write(data)


def read_text(uri: str | os.PathLike[str], encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def write_text(uri: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    write_bytes(uri, text.encode(encoding))


def list_files(uri: str | os.PathLike[str], *, suffix: str | Sequence[str] | None = None) -> list[str]:
    """Every file under the folder ``uri`` (recursive, sorted), as URIs of the same kind as ``uri``.

    ``suffix`` keeps names ending with it (or with one of several). Raises FileNotFoundError naming the URI
    when the folder does not exist.
    """
    s = os.fspath(uri)
    fs, path = resolve(s)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=False))
    except FileNotFoundError as err:
        raise _not_found(s, err) from err
    suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix or ())
    files = [i.path for i in infos if i.type == pafs.FileType.File]
    if suffixes:
        files = [f for f in files if f.endswith(suffixes)]
    return [_to_uri(s, f) for f in sorted(files)]


def copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy a file or a whole folder from ``src`` to ``dst``, across filesystems (local <-> S3 <-> GCS).

    A folder is copied to ``dst`` as a folder (``dst`` is created); a file to the file ``dst``.
    """
    src_fs, src_path = resolve(src)
    dst_fs, dst_path = resolve(dst)
    kind = src_fs.get_file_info(src_path).type
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{redact_uri(src)}: nothing to copy, no such file or folder")
    if kind == pafs.FileType.Directory:
        dst_fs.create_dir(dst_path, recursive=True)
    elif isinstance(dst_fs, pafs.LocalFileSystem):
        dst_fs.create_dir(os.path.dirname(dst_path), recursive=True)
    pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)


def delete(uri: str | os.PathLike[str], *, missing_ok: bool = True) -> None:
    """Delete the file or folder ``uri`` (recursively)."""
    fs, path = resolve(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)
    elif not missing_ok:
        raise FileNotFoundError(f"{redact_uri(uri)}: nothing to delete")


def train_storage(uri: str | os.PathLike[str]) -> dict[str, Any]:
    """Keyword arguments for ``ray.train.RunConfig`` so Ray Train writes checkpoints under ``uri``.

    ``RunConfig(name=..., **train_storage("s3://bucket/runs"))``: the filesystem is passed explicitly, so an
    ``endpoint_override`` or other option in the URI reaches Ray Train too.
    """
    fs, path = resolve(uri)
    return {"storage_path": path, "storage_filesystem": fs}


# ---------------------------------------------------------------- shared storage on a cluster


def cluster_hosts() -> list[str]:
    """Distinct addresses of the alive nodes of the connected Ray cluster ([] when Ray is not initialised).

    Nodes started on one machine (``ray.cluster_utils.Cluster``, several raylets on a laptop) share its disk
    and count once.
    """
    import ray

    if not ray.is_initialized():
        return []
    return sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")})


def _mount_of(path: str, mounts_text: str | None = None) -> tuple[str, str] | None:
    """(mount point, filesystem type) of the mount holding ``path``, from /proc/mounts (None off Linux)."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text()
        except OSError:
            return None
    text = mounts_text
    p, missing = Path(path), []
    while not p.exists() and p != p.parent:  # a folder still to be created: resolve what exists, keep the rest
        missing.append(p.name)
        p = p.parent
    real = os.path.join(os.path.realpath(p), *reversed(missing))
    best: tuple[str, str] | None = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        # the longest mount point holding the path; on the same point, the later mount hides the earlier
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and (best is None or len(mount) >= len(best[0])):
            best = (mount, fields[2])
    return best


def is_on_network_filesystem(path: str | os.PathLike[str], *, mounts_text: str | None = None) -> bool:
    """Whether the local ``path`` lies on a filesystem that other machines can mount (NFS, EFS, FUSE, ...).

    ``mounts_text`` is a mount table in /proc/mounts format (default: this machine's).
    """
    mount = _mount_of(_local_path(os.fspath(path)), mounts_text)
    if mount is None:
        return False
    fstype = mount[1].lower()
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse.")


def check_shared_storage(
    path: str | os.PathLike[str], *, what: str = "storage path", hosts: Sequence[str] | None = None
) -> None:
    """Refuse a node-local ``path`` when the Ray cluster spans more than one machine.

    Call it at the start of a stage, after connecting to Ray, for every input and output location (the prepared
    dataset, the run folder, the checkpoint). ``hosts`` defaults to :func:`cluster_hosts`. ``s3://``/``gs://``
    URIs and local paths on a network filesystem pass; on one machine everything passes.
    Raises :class:`ConfigError` naming the path and saying what to use instead.
    """
    s = os.fspath(path)
    if _check_uri(s) in REMOTE_SCHEMES:  # a malformed URI is refused here too
        return
    nodes = list(cluster_hosts() if hosts is None else hosts)
    if len(nodes) <= 1:
        return
    local = _local_path(s)
    if is_on_network_filesystem(local):
        return
    shown = ", ".join(nodes[:5]) + (", ..." if len(nodes) > 5 else "")
    raise ConfigError(
        f"{what} {s!r} is a local path ({local}), but the Ray cluster spans {len(nodes)} machines ({shown}): "
        "each node would read and write its own disk, so a dataset prepared on one node is missing on the "
        "others and checkpoints end up scattered. Use shared storage: a folder on a file system mounted on every "
        f"node (NFS/EFS, e.g. /mnt/bigsister/{PurePosixPath(local).name or 'data'} with cluster.yaml) or, where "
        "the stage takes one, an s3:// or gs:// URI. See docs/cluster.md#storage."
    )
