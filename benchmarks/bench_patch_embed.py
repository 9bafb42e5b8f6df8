"""What the matmul patch embedding buys (``sapo_vl.models.vision.patch_embed_as_linear``): Qwen3-VL's vision
``PatchEmbed`` through its ``Conv3d`` (kernel = stride 2 x 16 x 16, 3 channels) against the same weights as one
matmul over the flattened patches, forward + backward (a trainable tower) and no-grad forward (generation, scoring),
alternating in one process, at the tiny model's vision width and at real Qwen3-VL ones.

    python benchmarks/bench_patch_embed.py [--rounds 9] [--patches 784] [--widths 32 1024 1152]

784 patches: four 224 x 224 images (the image-heavy workload of bench_vs_trl.py). Widths: the tiny model's 32,
Qwen3-VL-2B/4B/8B's vision tower 1024, Qwen3-VL-30B-A3B's 1152.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv: list[str] | None = None) -> int:
    from sapo_vl.models.vision import patch_embed_as_linear

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--patches", type=int, default=784)
    p.add_argument("--widths", type=int, nargs="+", default=[32, 1024, 1152])
    args = p.parse_args(argv)
    print(f"{args.patches} patches of 3 x 2 x 16 x 16 pixels, {torch.get_num_threads()} threads, {args.rounds} rounds "
          "(median)")
    for width in args.widths:
        model = torch.nn.Module()
        model.visual = torch.nn.Module()
        model.visual.patch_embed = embed = torch.nn.Module()
        embed.proj = torch.nn.Conv3d(3, width, kernel_size=(2, 16, 16), stride=(2, 16, 16))
        def conv(x, proj=embed.proj, width=width):  # transformers' PatchEmbed.forward
            return proj(x.view(-1, 3, 2, 16, 16)).view(-1, width)

        assert patch_embed_as_linear(model)
        variants = {"conv3d": conv, "matmul": embed.forward}
        pixels = torch.randn(args.patches, 3 * 2 * 16 * 16)
        times = {(name, grad): [] for name in variants for grad in (True, False)}
        for r in range(args.rounds + 1):  # round 0 warms up
            for (name, grad), t in times.items():
                start = time.perf_counter()
                with torch.set_grad_enabled(grad):
                    out = variants[name](pixels)
                    if grad:
                        out.sum().backward()
                if r:
                    t.append(time.perf_counter() - start)
        for grad, what in ((True, "forward + backward"), (False, "no-grad forward")):
            slow, fast = (statistics.median(times[(name, grad)]) for name in variants)
            print(f"  width {width:5d} {what:18s} conv3d {slow * 1e3:7.2f} ms  matmul {fast * 1e3:7.2f} ms  "
                  f"matmul is {slow / fast:.2f}x faster")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)  # here, not in main(): the test suite calls main() in its own process
    raise SystemExit(main())
