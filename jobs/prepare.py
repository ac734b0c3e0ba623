"""``ray job submit`` entry point for dataset preparation: ``bigsister prepare`` on the cluster the job runs on.

Example (from the repository root)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/prepare.py --source aihub --root /mnt/aihub --out /mnt/prepared --config settings.yaml

The options are those of ``bigsister prepare`` (``python jobs/prepare.py --help``); Ray is the cluster running
the job unless ``ray.address`` in the settings names another (:mod:`bigsister_ray.job`). ``--root`` and ``--out``
must be paths every node sees (shared storage), since the decode tasks run on the workers; ``--out`` may also be
an ``s3://`` or ``gs://`` URI (each task uploads its finished shard; the nodes need credentials for the bucket).
"""

from __future__ import annotations

import sys

from bigsister_ray.job import run_command

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    return run_command("prepare", argv)


if __name__ == "__main__":
    sys.exit(main())
