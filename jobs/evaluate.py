"""``ray job submit`` entry point for evaluation. Thin: parse arguments, load settings, call the package.

Example (from the repository root)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/evaluate.py --checkpoint /mnt/runs/exp1/best/model.pt --data /mnt/prepared --out /mnt/eval/exp1

Writes ``report.md``, ``metrics.json``, ``confusion.png`` and ``reliability.png`` into ``--out`` and stores the
validation-calibrated temperature and alert thresholds in the checkpoint. ``--source folders|aihub|manifest``
evaluates a raw dataset at ``--data`` directly. ``--checkpoint``, a prepared ``--data`` and ``--out`` may be
``s3://`` or ``gs://`` URIs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["parse_args", "main"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobs/evaluate.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="model.pt written by training: a path or an s3:// or gs:// URI.")
    parser.add_argument("--data", required=True,
                        help="Prepared dataset (a path or an s3:// or gs:// URI), or a raw dataset root (a path) with --source.")
    parser.add_argument("--out", required=True, help="Output folder for the report: a path or an s3:// or gs:// URI.")
    parser.add_argument("--split", default="test", help="Split of a prepared dataset (default: test).")
    parser.add_argument("--source", default=None, choices=["aihub", "folders", "manifest"], help="Evaluate a raw dataset.")
    parser.add_argument("--config", type=Path, default=None, help="YAML settings file.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bigsister_ray.config import load_settings
    from bigsister_ray.errors import BigSisterError
    from bigsister_ray.train.evaluate import evaluate

    try:
        settings = load_settings(args.config)
        result = evaluate(args.checkpoint, args.data, args.out, settings, split=args.split, source=args.source)
    except BigSisterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
