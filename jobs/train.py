"""``ray job submit`` entry point for training. Thin: parse arguments, load settings, call the package.

Example (from the repository root)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/train.py --data /mnt/prepared --out /mnt/runs/exp1 --workers 4 --config settings.yaml

Inside a submitted job, ``ray.init(address=...)`` connects to the cluster the job runs on (``ray.address`` in
the settings, else ``--address``, ``auto`` by default). ``--data`` and ``--out`` must be paths every node sees
(shared storage), or ``s3://`` / ``gs://`` URIs: the workers read the shards and Ray Train writes checkpoints
there. Submitting again with the same ``--out`` (or ``--name``) resumes the run at the epoch after its last
checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["parse_args", "main"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobs/train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Prepared dataset (output of prepare): a shared path or an s3:// or gs:// URI.")
    parser.add_argument("--out", required=True, help="Run folder on storage every node sees: a shared path or an s3:// or gs:// URI.")
    parser.add_argument("--model", default=None, help="Model from the registry (default: model.name).")
    parser.add_argument("--workers", type=int, default=None, help="Ray Train workers (default: train.workers).")
    parser.add_argument("--epochs", type=int, default=None, help="Epochs (default: train.epochs).")
    parser.add_argument("--name", default=None, help="Run name (default: train.name or the folder name).")
    parser.add_argument("--gpu", action="store_true", help="One GPU per worker (train.use_gpu).")
    parser.add_argument("--config", type=Path, default=None, help="YAML settings file.")
    parser.add_argument("--address", default="auto", help="Ray address (default: auto, the cluster running this job).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    from bigsister_ray.config import load_settings
    from bigsister_ray.errors import BigSisterError
    from bigsister_ray.train.trainer import train

    try:
        overrides = {"model.name": args.model, "train.workers": args.workers, "train.epochs": args.epochs,
                     "train.name": args.name, "train.use_gpu": True if args.gpu else None}
        settings = load_settings(args.config, **overrides)
        if not ray.is_initialized():
            ray.init(address=settings.ray.address or args.address, namespace=settings.ray.namespace)
        result = train(args.data, args.out, settings)
    except BigSisterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
