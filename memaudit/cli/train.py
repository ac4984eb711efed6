"""`memaudit train`: the reference trainer (UDLM NELBO) on built-in or user data."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..progress import console
from .errors import EXIT_INTERRUPTED, UsageError, cli_errors
from .options import Threads
from .options import N_TRAIN_MAX, SAMPLES_MAX, Data, DataSeed, Device, JsonOutput, Preset, SeqLen, VocabSize, print_json, require_stdout, \
    resolve_device
from .options import Seed as SeedOption


@cli_errors
def train(
    out: Path = typer.Option(..., "--out", help="Checkpoint directory to write."),
    data: Data = "synthetic",
    n_train: int = typer.Option(32, "--n-train", min=1, max=N_TRAIN_MAX, help="Training-set size in sequences (nested subsets)."),
    preset: Preset = "nano",
    steps: int = typer.Option(2000, "--steps", min=1, max=10**9, help="Optimizer steps."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, max=SAMPLES_MAX),
    lr: float = typer.Option(1e-3, "--lr"),
    warmup: int = typer.Option(100, "--warmup", min=0),
    ema_decay: float = typer.Option(0.999, "--ema-decay"),
    seed: SeedOption = 0,
    data_seed: DataSeed = 0,
    seq_len: SeqLen = None,
    vocab_size: VocabSize = None,
    save_every: Optional[int] = typer.Option(
        None, "--save-every", min=1, show_default=False,
        help="Every N steps (and at the end) also keep the checkpoint as OUT/checkpoint-N/ (config, weights, "
             "tokenizer, training state): a series that `memaudit scan 'OUT/checkpoint-*' --out DIR` plots "
             "against the training step."),
    keep: Optional[int] = typer.Option(None, "--keep", min=1, show_default=False,
                                       help="With --save-every: keep only the newest K checkpoint-N folders."),
    resume: bool = typer.Option(False, "--resume", help="Continue the checkpoint in --out."),
    device: Device = "auto",
    threads: Threads = None,
    json_output: JsonOutput = False,
    family: str = typer.Option("ddit", "--family", help="ddit (the UDLM NELBO, default) | diffusion_gemma: a tiny "
                               "DiffusionGemma-architecture reference with the family's objective on the built-in "
                               "grammar Q&A pairs (--data, --preset, --seq-len, --vocab-size do not apply)."),
    n_test: int = typer.Option(8, "--n-test", min=0, help="diffusion_gemma: held-out pairs written beside the model."),
):
    """Train a reference uniform-state diffusion model (UDLM NELBO) on built-in or user data."""
    from .. import threads as torch_threads

    torch_threads.enable(threads)
    from rich.markup import escape

    from ..model import PRESETS
    from ..train import TrainConfig
    from ..train import train as run_training

    if json_output:
        require_stdout()
    if family not in ("ddit", "diffusion_gemma"):
        raise UsageError(f"--family must be ddit or diffusion_gemma (got {family!r})")
    if family == "diffusion_gemma":
        from ..train_block import BlockTrainConfig, train_reference

        block = BlockTrainConfig(n_train=n_train, n_test=n_test, steps=steps, batch_size=batch_size, lr=lr,
                                 seed=seed, data_seed=data_seed)
        summary = train_reference(block, out, log=lambda line: console.print(line, highlight=False))
        if json_output:
            print_json(summary)
        console.print(f"trained DiffusionGemma reference: {steps} steps, loss {summary['final_loss']:.4f} (CE of x0), "
                      f"{summary['seconds']:.1f} s → {escape(str(out))} (sft_train.jsonl / sft_test.jsonl beside it)",
                      highlight=False)
        return
    cfg = TrainConfig(data=data, n_train=n_train, preset=preset, steps=steps, batch_size=batch_size, lr=lr,
                      warmup=warmup, ema_decay=ema_decay, seed=seed, data_seed=data_seed, seq_len=seq_len,
                      vocab_size=vocab_size, save_every=save_every, keep=keep, device=resolve_device(device))
    if keep is not None and save_every is None:
        raise UsageError("--keep needs --save-every (it limits the checkpoint-N folders that writes)")
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    result = run_training(cfg, out, resume=resume)
    summary = {"out": str(result.out_dir), "steps_done": result.steps_done, "final_loss": result.final_loss,
               "tokens_per_second": result.tokens_per_second, "wall_seconds": result.wall_seconds,
               "interrupted": result.interrupted}
    if json_output:
        print_json(summary)
    console.print(f"{'interrupted' if result.interrupted else 'trained'}: {result.steps_done} steps, "
                  f"loss {result.final_loss:.4f} (NELBO, nats/token), {result.tokens_per_second:,.0f} tokens/s, "
                  f"{result.wall_seconds:.1f} s → {escape(str(result.out_dir))}", highlight=False)
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
