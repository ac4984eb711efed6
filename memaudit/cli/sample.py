"""`memaudit sample`: sequences from noise with the model's own reverse process."""
from __future__ import annotations

import typer

from .errors import cli_errors
from .options import SAMPLES_MAX, STEPS_MAX, Checkpoint, Device, JsonOutput, ScheduleSpec, Seed, TimeInput, \
    TokenizerName, TrustRemoteCode, Weights, load_options, print_json, require_stdout, resolve_device, write_out


@cli_errors
def sample(
    checkpoint: Checkpoint,
    n: int = typer.Option(8, "--n", min=1, max=SAMPLES_MAX, help="Number of sequences."),
    steps: int = typer.Option(128, "--steps", min=1, max=STEPS_MAX, help="Reverse steps from t=1."),
    seed: Seed = 0,
    weights: Weights = None,
    tokenizer: TokenizerName = None,
    trust_remote_code: TrustRemoteCode = False,
    time_input: TimeInput = None,
    schedule: ScheduleSpec = None,
    device: Device = "auto",
    json_output: JsonOutput = False,
    prompt: str = typer.Option(None, "--prompt", help="Prompt of a prompt-conditioned family (DiffusionGemma; "
                               "'ids:2,17' for token ids). Default: the chat template's empty user turn, else BOS."),
):
    """Generate sequences from noise with the model's own reverse process and print them."""
    from ..adapters import load
    from ..sampling import generate

    require_stdout()
    denoiser = load(checkpoint, weights=weights, device=resolve_device(device),
                    **load_options(tokenizer, trust_remote_code, time_input, schedule))
    from ..prompted import resolve_prompts

    denoiser = resolve_prompts(denoiser, prompt)
    tokens = generate(denoiser, n, steps=steps, seed=seed)
    rows = [{"tokens": row.tolist(), "text": denoiser.decode(row)} for row in tokens]
    if json_output:
        print_json({"samples": rows, "steps": steps, "seed": seed, "model": denoiser.describe()})
        return
    for i, row in enumerate(rows):
        shown = row["text"] if row["text"] is not None else " ".join(map(str, row["tokens"]))
        write_out(f"[{i}] {shown}\n")
