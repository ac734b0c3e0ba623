"""``ray job submit`` entry point for dataset preparation. Thin: parse arguments, load settings, call the package.

Example (from the repository root)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/prepare.py --source aihub --root /mnt/aihub --out /mnt/prepared --config settings.yaml

Inside a submitted job, ``ray.init(address=...)`` connects to the cluster the job runs on: the address comes
from ``ray.address`` in the settings (``auto`` by default here). ``--root`` and ``--out`` must be paths every
node sees (shared storage), since the decode tasks run on the workers; ``--out`` may also be an ``s3://`` or
``gs://`` URI (each task uploads its finished shard; the nodes need credentials for the bucket).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["parse_args", "main"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobs/prepare.py", description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, choices=["aihub", "folders", "manifest"])
    parser.add_argument("--root", required=True,
                        help="Dataset root (or the manifest file): a path every node sees (the videos are opened as files).")
    parser.add_argument("--out", required=True,
                        help="Output folder on storage every node sees: a shared path or an s3:// or gs:// URI.")
    parser.add_argument("--config", type=Path, default=None, help="YAML settings file.")
    parser.add_argument("--address", default="auto", help="Ray address (default: auto, the cluster running this job).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    from bigsister_ray.config import load_settings
    from bigsister_ray.data.pipeline import check_local_root, prepare
    from bigsister_ray.errors import BigSisterError

    try:
        settings = load_settings(args.config)
        check_local_root(args.root)  # an s3:// or gs:// root: say to mount or sync it, before connecting
        address = settings.ray.address or args.address
        if not ray.is_initialized():
            ray.init(address=address, namespace=settings.ray.namespace)
        from bigsister_ray.storage import check_shared_storage

        check_shared_storage(args.root, what="--root")  # every node decodes: refuse node-local paths up front
        check_shared_storage(args.out, what="--out")
        summary = prepare(args.source, args.root, args.out, settings)
    except BigSisterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
