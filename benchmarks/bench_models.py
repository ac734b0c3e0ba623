"""Registry models side by side on this machine's CPU: parameters, forward GFLOPs per clip, and clips per
second for inference and for a training step (forward + backward + AdamW), at one ClipSpec.

Both wall-clock and process-CPU-time rates are printed: on a shared machine the wall-clock rate depends on
what else runs, the CPU-time rate (clips per CPU-second, all threads summed) much less.

    python benchmarks/bench_models.py --models tiny3d,i3d,s3d,mc3_18 --clip laptop --threads 1 --batch 8
"""

from __future__ import annotations

import argparse
import json
import time


def _rate(fn, clips_per_call: int, calls: int) -> tuple[float, float]:
    fn()  # warm-up (allocator, oneDNN primitive cache)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return clips_per_call * calls / wall, clips_per_call * calls / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny3d,i3d,s3d,mc3_18")
    parser.add_argument("--clip", default="laptop", help="a clip preset name (clip.CLIP_PRESETS)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", default=None,
                        help="comma-separated batch sizes to sweep (default: only --batch); a JSON summary ends the output")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--train-models", default="tiny3d,i3d", help="models also timed for a training step")
    args = parser.parse_args()

    import torch

    from bigsister_ray.clip import CLIP_PRESETS
    from bigsister_ray.models import build_model, model_flops

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clip = CLIP_PRESETS[args.clip]
    rows: list[dict] = []
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [args.batch]
    for args.batch in batches:
        _table(args, torch, clip, rows, build_model, model_flops)
    print(json.dumps({"threads": args.threads, "clip": args.clip, "calls": args.calls, "rows": rows}), flush=True)


def _table(args, torch, clip, rows, build_model, model_flops) -> None:
    x = torch.randn(args.batch, 3, clip.frames, clip.size, clip.size)
    y = torch.arange(args.batch) % 2
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, clip {args.clip} "
          f"({clip.frames} x {clip.size} x {clip.size})")
    print(f"{'model':<12} {'params':>8} {'GFLOP/clip':>10} {'infer c/s wall':>14} {'infer c/CPU-s':>13} "
          f"{'train c/s wall':>14} {'train c/CPU-s':>13}")
    for name in args.models.split(","):
        model = build_model(name, 2)
        params = sum(p.numel() for p in model.parameters())
        gflops = model_flops(model, clip) / 1e9

        def infer() -> None:
            with torch.inference_mode():
                model(x)

        model.eval()
        iw, ic = _rate(infer, args.batch, args.calls)
        tw = tc = float("nan")
        if name in args.train_models.split(","):
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

            def step() -> None:
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            tw, tc = _rate(step, args.batch, args.calls)
        print(f"{name:<12} {params / 1e6:>7.2f}M {gflops:>10.2f} {iw:>14.1f} {ic:>13.1f} {tw:>14.1f} {tc:>13.1f}", flush=True)
        rows.append({"model": name, "batch": args.batch, "params_m": round(params / 1e6, 2), "gflops_per_clip": round(gflops, 2),
                     "infer_clips_per_s_wall": round(iw, 2), "infer_clips_per_cpu_s": round(ic, 2),
                     "train_clips_per_s_wall": None if tw != tw else round(tw, 2),
                     "train_clips_per_cpu_s": None if tc != tc else round(tc, 2)})


if __name__ == "__main__":
    main()
