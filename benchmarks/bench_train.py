"""Training throughput: the Ray Train loop against a plain single-process PyTorch loop, and bf16 I3D on a GPU.

CPU part (always): the same model, the same prepared shards, the same decode + augmentation + step
(:func:`bigsister_ray.train.loop.run_epoch`) and the same torch threads, run

* plainly: one Python process, shards read with pyarrow, ``torch.set_num_threads(T)``;
* through :func:`bigsister_ray.train.trainer.train`: ``TorchTrainer`` with one worker holding ``T`` CPUs and
  ``T`` torch threads, the shards streamed by Ray Data through ``get_dataset_shard``.

Clips/s counts the training phase of each epoch (data waits included, validation excluded); the first epoch of
each side is warm-up and left out; the figure is the median of the rest. The ratio Ray / plain is printed.

GPU part (only when CUDA is available): bf16-autocast I3D training steps and inference at 32x224x224 and
64x224x224, clips/s and model FLOP utilisation against the device's dense bf16 peak (``--peak-tflops``, or a
known value for H100/H200/A100).

    python benchmarks/bench_train.py --clips 96 --epochs 4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "plain_loop", "ray_loop", "gpu_i3d"]

REPO = Path(__file__).resolve().parents[1]
#: dense bf16 peak FLOP/s by device-name fragment
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def _dataset(root: Path, clips: int, frames: int, size: int) -> Path:
    sys.path.insert(0, str(REPO))
    from bigsister_ray.clip import ClipSpec
    from tests._prepared import make_prepared  # the synthetic prepared-dataset writer the tests use

    per_class = max(1, clips // 2)
    make_prepared(root, labels=("fight", "normal"), counts={"train": per_class, "val": max(2, per_class // 4)},
                  spec=ClipSpec(frames=frames, fps=8.0, size=size, stride=max(1, frames // 2)), shard_clips=32)
    return root


def _settings(threads: int, epochs: int, batch: int, workers: int = 1):
    from bigsister_ray.config import Settings

    return Settings.model_validate({
        "ray": {"num_cpus": max(2, threads * workers)},
        "model": {"name": "tiny3d", "dropout": 0.0},
        "train": {"workers": workers, "cpus_per_worker": threads, "torch_threads": threads, "epochs": epochs,
                  "batch_size": batch, "lr": 3e-3, "early_stopping_patience": 10_000, "max_failures": 0},
    })


def plain_loop(data: Path, threads: int, epochs: int, batch: int) -> list[dict]:
    """Per epoch of the same step in one process (pyarrow reading the shards): clips/s, seconds, data wait."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from bigsister_ray.data.prepared import read_manifest
    from bigsister_ray.models import build_model, get_model_spec
    from bigsister_ray.train.loop import class_weights, run_epoch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    manifest = read_manifest(data)
    settings = _settings(threads, epochs, batch)
    model = build_model("tiny3d", len(manifest.labels), dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.train.lr, weight_decay=settings.train.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(class_weights(manifest.counts["train"], manifest.labels)))
    norm = get_model_spec("tiny3d").norm
    rng = np.random.default_rng(0)
    paths = manifest.shard_paths(data, "train")

    def batches():
        for i in rng.permutation(len(paths)):
            for rb in pq.ParquetFile(paths[i]).iter_batches(batch_size=batch, columns=["frames", "label_idx"]):
                yield rb.to_pydict()

    epochs_out = []
    for _ in range(epochs):
        stats = run_epoch(model, batches(), manifest.clip, norm, len(manifest.labels), optimizer=opt,
                          loss_fn=loss_fn, augment=True, color_jitter=settings.train.color_jitter, rng=rng)
        epochs_out.append({"clips_per_s": stats.clips / stats.seconds, "seconds": stats.seconds,
                           "data_wait_s": stats.data_wait_s, "first_batch_s": stats.first_batch_s})
    return epochs_out


def ray_loop(data: Path, threads: int, epochs: int, batch: int, workers: int = 1) -> list[dict]:
    """Per epoch of the Ray Train loop (TorchTrainer, Ray Data shards), from its history: clips/s, seconds, data wait
    (the slowest worker's)."""
    import ray

    from bigsister_ray.train.trainer import read_history, train

    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(threads, epochs, batch, workers)
        train(data, Path(tmp) / f"bench-{workers}w", settings)
        history = read_history(Path(tmp) / f"bench-{workers}w")
    ray.shutdown()
    return [{"clips_per_s": h["clips_per_s"], "seconds": h["train_seconds"], "data_wait_s": h["train_data_wait_s"],
             "first_batch_s": h["train_first_batch_s"]} for h in history if h["event"] == "epoch"]


def gpu_i3d(peak_tflops: float | None, steps: int = 10, batch: int = 8) -> list[dict]:
    """bf16 I3D training and inference clips/s and MFU at 32 and 64 x 224 x 224 (CUDA only)."""
    import torch

    from bigsister_ray.clip import ClipSpec
    from bigsister_ray.models import build_model, mfu, model_flops

    name = torch.cuda.get_device_name(0)
    peak = peak_tflops * 1e12 if peak_tflops else next((v for k, v in PEAK_BF16.items() if k in name), None)
    rows = []
    for frames in (32, 64):
        spec = ClipSpec(frames=frames, fps=25.0, size=224, stride=frames // 2)
        model = build_model("i3d", 6).cuda()
        x = torch.randn(batch, 3, frames, 224, 224, device="cuda")
        y = torch.randint(0, 6, (batch,), device="cuda")
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        for mode in ("train", "infer"):
            model.train(mode == "train")

            def step() -> None:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    if mode == "train":
                        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                    else:
                        with torch.inference_mode():
                            model(x)

            for _ in range(3):
                step()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            torch.cuda.synchronize()
            rate = steps * batch / (time.perf_counter() - t0)
            flops = model_flops("i3d", spec, num_classes=6, backward=(mode == "train"))
            rows.append({"device": name, "mode": mode, "frames": frames, "size": 224, "batch": batch,
                         "clips_per_s": rate, "gflops_per_clip": flops / 1e9,
                         "mfu": mfu(flops, rate, peak) if peak else None})
            print(json.dumps(rows[-1]), flush=True)
        del model, opt, x
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=96, help="Training clips in the synthetic prepared dataset.")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4, help="Epochs per side (the first is warm-up).")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch threads (and CPUs of the single Ray worker).")
    p.add_argument("--two-workers", action="store_true", help="Also run Ray Train with 2 workers x threads/2.")
    p.add_argument("--rounds", type=int, default=2,
                   help="Alternating plain/Ray rounds (plain, Ray, plain, Ray, ...): a load that changes during the "
                        "run hits both sides; medians over every round's epochs after its first.")
    p.add_argument("--peak-tflops", type=float, default=None, help="Dense bf16 peak of the GPU, for MFU.")
    p.add_argument("--skip-cpu", action="store_true")
    args = p.parse_args(argv)

    import torch

    if not args.skip_cpu:
        with tempfile.TemporaryDirectory() as tmp:
            data = _dataset(Path(tmp) / "prepared", args.clips, args.frames, args.size)
            plain_runs, ray_runs, waits = [], [], {"plain": [], "ray": []}
            for _ in range(max(1, args.rounds)):
                for side, loop, runs in (("plain", plain_loop, plain_runs), ("ray", ray_loop, ray_runs)):
                    epochs = loop(data, args.threads, args.epochs, args.batch)
                    runs.append([e["clips_per_s"] for e in epochs])
                    waits[side] += [(e["data_wait_s"], e["first_batch_s"], e["seconds"]) for e in epochs[1:] or epochs]
            plain = [r for run in plain_runs for r in (run[1:] or run)]
            ray_rates = [r for run in ray_runs for r in (run[1:] or run)]
            p_med, r_med = statistics.median(plain), statistics.median(ray_rates)
            # Paired: each round's Ray median over the same round's plain median (the machine's speed drifts).
            paired = [statistics.median(r[1:] or r) / statistics.median(p[1:] or p) for p, r in zip(plain_runs, ray_runs)]
            out = {"clips": args.clips, "clip": f"{args.frames}x{args.size}x{args.size}", "threads": args.threads,
                   "batch": args.batch, "rounds": max(1, args.rounds),
                   "plain_clips_per_s": [[round(r, 1) for r in run] for run in plain_runs],
                   "ray_clips_per_s": [[round(r, 1) for r in run] for run in ray_runs], "plain_median": round(p_med, 2),
                   "ray_median": round(r_med, 2), "ratio_ray_over_plain": round(r_med / p_med, 3),
                   "ratio_per_round": [round(x, 3) for x in paired], "ratio_paired_median": round(statistics.median(paired), 3),
                   # Of each side's measured epochs: the share of the training phase spent waiting for batches, and
                   # the median wait for an epoch's first batch (the data pipeline starting).
                   **{f"{side}_data_wait_share": round(sum(w for w, _, _ in ws) / sum(s for _, _, s in ws), 3)
                      for side, ws in waits.items()},
                   **{f"{side}_first_batch_s": round(statistics.median(f for _, f, _ in ws), 2) for side, ws in waits.items()},
                   "load_average": [round(x, 2) for x in os.getloadavg()]}
            if args.two_workers:
                two = [e["clips_per_s"] for e in ray_loop(data, max(1, args.threads // 2), args.epochs, args.batch, workers=2)]
                out["ray_2_workers_clips_per_s"] = [round(r, 1) for r in two]
                out["ray_2_workers_median"] = round(statistics.median(two[1:] or two), 2)
            print(json.dumps(out), flush=True)
    if torch.cuda.is_available():
        gpu_i3d(args.peak_tflops)
    else:
        print("no CUDA device: the bf16 I3D part did not run", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
