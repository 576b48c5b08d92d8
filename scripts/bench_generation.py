"""Generation speed: ms per caption at batch 1 and 32, with and without the key/value cache.

Random weights; every caption is forced to exactly --new-tokens tokens, so both paths do the same work.

    python scripts/bench_generation.py                      # default preset; float32, and bfloat16 where fast
    python scripts/bench_generation.py --threads 1          # steadier on a CPU shared with other jobs
    python scripts/bench_generation.py --compile            # torch.compile'd decoder, both paths
    python scripts/bench_generation.py --dtype float32 --batch-sizes 1 8 32 --device cuda
"""

from __future__ import annotations

import argparse
import platform

import torch

from vlm.experiments.benchmarks import benchmark_generation, format_timings
from vlm.runtime import cpu_has_fast_bf16


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--new-tokens", type=int, default=32, help="every caption gets exactly this many tokens")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="auto: float32, plus bfloat16 autocast where the hardware runs it fast (AVX-512 BF16/AMX, or a GPU)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: torch's choice); on a machine shared with other jobs 1 thread is far steadier, "
        "as a busy core stalls every multi-threaded op",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the decoder for both paths (minutes to compile on a CPU)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (the median is shown)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.dtype == "auto":
        fast_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_fast_bf16()
        dtypes = ["float32", "bfloat16"] if fast_bf16 else ["float32"]
    else:
        dtypes = [args.dtype]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"preset {args.preset}, device {device} ({where}), {torch.get_num_threads()} threads, "
        f"{'compiled' if args.compile else 'eager'}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}"
    )
    timings = benchmark_generation(
        args.preset, args.batch_sizes, dtypes, args.new_tokens, device, args.repeats, compile=args.compile
    )
    print(format_timings(timings))


if __name__ == "__main__":
    main()
