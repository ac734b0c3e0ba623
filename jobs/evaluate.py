"""``ray job submit`` entry point for evaluation: ``bigsister evaluate`` on the cluster the job runs on.

Example (from the repository root)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/evaluate.py --checkpoint /mnt/runs/exp1/best/model.pt --data /mnt/prepared --out /mnt/eval/exp1

The options are those of ``bigsister evaluate`` (``python jobs/evaluate.py --help``). Writes ``report.md``,
``metrics.json``, ``confusion.png`` and ``reliability.png`` into ``--out`` and stores the validation-calibrated
temperature and alert thresholds in the checkpoint. ``--source folders|aihub|manifest`` evaluates a raw dataset
at ``--data`` directly. ``--checkpoint``, a prepared ``--data`` and ``--out`` may be ``s3://`` or ``gs://`` URIs.
"""

from __future__ import annotations

import sys

from bigsister_ray.job import run_command

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    return run_command("evaluate", argv)


if __name__ == "__main__":
    sys.exit(main())
