"""Cost of the scan's building blocks at one shape and batch: a network call, reverse steps, an
entropy pass, and where the time of a step goes.

    python benchmarks/bench_step.py --shape owt-small --batch 2
    python benchmarks/bench_step.py --shape lm1b-small --batch 32 --profile

Writes (once, into --cache) a random-weight UDLM-layout checkpoint at the shape (bench_shapes.py's
SHAPES), loads it with memaudit.load, and prints wall times of: one network call with its
log-softmax (the Denoiser), `steps` ancestral reverse steps from t = 1 on the quadratic grid with
the final greedy step (steps + 1 calls: the sampler), the same number of greedy steps from
t = 0.25 (the fixed-point test's dynamics), one entropy pass at t = 0.05, and the process's peak
RSS. --profile adds torch.profiler's table of the ancestral steps, by operator: the network's
matrix products against the work over the vocabulary. Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_shapes import SHAPES, write_udlm  # noqa: E402


def timed(name: str, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{name:44s} {time.perf_counter() - start:8.2f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="lm1b-small", choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cache", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "memaudit-bench-step"))
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    import memaudit
    from memaudit.probe import evaluate_entropy
    from memaudit.sampling import SampleStreams, reverse_process

    checkpoint = Path(args.cache) / args.shape
    if not (checkpoint / "model.safetensors").exists():
        write_udlm(checkpoint, SHAPES[args.shape])
    denoiser = memaudit.load(str(checkpoint))
    batch, steps = args.batch, args.steps
    print(f"# {args.shape}: V {denoiser.vocab_size}, L {denoiser.seq_len}, batch {batch}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; command: {' '.join(sys.argv)}")
    streams = SampleStreams(0, ("sample",), range(batch))
    x = streams.integers(denoiser.vocab_size, denoiser.seq_len)
    t = torch.full((batch,), 0.5)
    with torch.no_grad():
        denoiser(x, t)                                                       # warm-up
        timed("one network call (with its log-softmax)", lambda: denoiser(x, t))
        timed(f"sampler: {steps} ancestral steps + final ({steps + 1} calls)",
              lambda: reverse_process(denoiser, x, 1.0, steps, streams=streams, final="greedy", grid="quadratic"))
        timed(f"fixed-point dynamics: {steps} greedy steps + final",
              lambda: reverse_process(denoiser, x, 0.25, steps, final="argmax"))
        timed("entropy pass at t = 0.05 (1 call)", lambda: evaluate_entropy(denoiser, x, 0.05, 0, batch_size=batch))
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                reverse_process(denoiser, x, 1.0, steps, streams=streams, final="greedy", grid="quadratic")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
