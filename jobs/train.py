"""``ray job submit`` entry point for training: ``bigsister train`` on the cluster the job runs on.

Example (from the repository root)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/train.py --data /mnt/prepared --out /mnt/runs/exp1 --workers 4 --config settings.yaml

The options are those of ``bigsister train`` (``python jobs/train.py --help``); Ray is the cluster running the
job unless ``ray.address`` in the settings names another (:mod:`bigsister_ray.job`). ``--data`` and ``--out``
must be paths every node sees (shared storage), or ``s3://`` / ``gs://`` URIs: the workers read the shards and
Ray Train writes checkpoints there. Submitting again with the same ``--out`` (or ``--name``) resumes the run at
the epoch after its last checkpoint.
"""

from __future__ import annotations

import sys

from bigsister_ray.job import run_command

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    return run_command("train", argv)


if __name__ == "__main__":
    sys.exit(main())
