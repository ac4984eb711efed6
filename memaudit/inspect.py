"""`memaudit inspect`: what a checkpoint is and what a scan of it would use, without scanning.

Loads the checkpoint exactly as `scan` would (same adapter, same checks: a checkpoint that inspects
cleanly also loads for a scan) and summarises family, architecture, parameter count, vocabulary,
length, tokenizer, EMA availability, the weights that would be used and how time is fed in.
"""
from __future__ import annotations

from typing import Any


def inspect_checkpoint(path_or_id: str, weights: str | None = None, trust_remote_code: bool = False,
                       tokenizer: str | None = None, time_input: str | None = None,
                       schedule: str | None = None) -> dict[str, Any]:
    from .adapters import load

    denoiser = load(path_or_id, weights=weights, trust_remote_code=trust_remote_code, tokenizer=tokenizer,
                    time_input=time_input, schedule=schedule)
    return describe_denoiser(denoiser, str(path_or_id), denoiser.provenance["adapter"], requested_weights=weights)


def describe_denoiser(denoiser, checkpoint: str, adapter_family: str, requested_weights: str | None = None) -> dict:
    prov = dict(denoiser.provenance)
    tok = denoiser.tokenizer
    time_desc = {
        "sigma": "sigma_t = -log(alpha_t) from the schedule",
        "t": "raw diffusion time t",
        "none": "none (time conditioning off: the network gets sigma = 0)",
    }.get(denoiser.time_input, denoiser.time_input)
    if getattr(denoiser, "own_sampler", False):
        time_desc = "none: the network takes no diffusion time (a time-free family); t only sets re-noising"
    return {
        "checkpoint": checkpoint,
        "resolved_path": prov.get("checkpoint"),
        "adapter": adapter_family,
        "family": denoiser.family,
        "codebase": prov.get("codebase", denoiser.family),
        "algorithm": prov.get("algorithm", denoiser.family),
        "diffusion": prov.get("diffusion", "uniform"),
        "format": prov.get("format", adapter_family),
        "architecture": denoiser.architecture(),
        "n_parameters": denoiser.model.num_parameters(),
        "vocab_size": denoiser.vocab_size,
        "seq_len": denoiser.seq_len,
        "tokenizer": {
            "present": tok is not None,
            "vocab_size": tok.get_vocab_size(with_added_tokens=True) if tok is not None else None,
            "source": prov.get("tokenizer_source", "tokenizer.json" if tok is not None else "none"),
            **{k: v for k, v in (prov.get("tokenizer") or {}).items() if k != "how"},
        },
        "modeling_code": prov.get("modeling_code", "memaudit"),
        "ema_available": prov.get("ema_available", denoiser.weights == "ema"),
        "weights": denoiser.weights,
        "weights_default": prov.get("weights_default", denoiser.weights),
        "weights_requested": requested_weights,
        "time_input": denoiser.time_input,
        "time_input_description": time_desc,
        "schedule": denoiser.schedule.to_dict(),
        "output_vocab_slice": denoiser.output_vocab_slice,
        "output": prov.get("output", "x0 log-probabilities: log_softmax of the network's logits"),
        "files": prov.get("files", {}),
        "hub": {k: prov[k] for k in ("hub_id", "revision") if k in prov} or None,
        "notes": list(prov.get("notes", [])),
        **({"family_details": denoiser.family_details()} if hasattr(denoiser, "family_details") else {}),
    }


def format_summary(doc: dict) -> list[tuple[str, str]]:
    """(label, value) rows for the human-readable table."""
    a = doc["architecture"]
    tok = doc["tokenizer"]
    rows = [
        ("checkpoint", str(doc["checkpoint"])),
        ("family", f"{doc['family']}  ({doc['diffusion']}; adapter: {doc['adapter']})"),
        ("architecture", f"DDiT {a['n_blocks']} blocks × {a['hidden_size']} hidden, {a['n_heads']} heads, "
                         f"cond {a['cond_dim']}, mlp ×{a['mlp_ratio']}" if "n_blocks" in a
                         else f"{a.get('class')}, {a['n_layers']} layers × {a['hidden_size']} hidden, "
                              f"{a['n_heads']} heads, MoE {a['num_experts']} experts (top {a['top_k_experts']}), "
                              f"{a['dtype']}" if "num_experts" in a
                         else f"{a.get('class')} (the checkpoint's own modeling code)"),
        ("modeling code", "the checkpoint's own (executed: --trust-remote-code)"
         if doc["modeling_code"] == "checkpoint" else "transformers' own classes (no remote code)"
         if doc["modeling_code"] == "transformers" else "memaudit's (native loader)"),
        ("parameters", f"{doc['n_parameters']:,}"),
        ("vocabulary", f"{doc['vocab_size']}" + (f" (network outputs {a['output_classes']}, "
                                                  f"slice to {doc['output_vocab_slice']})"
                                                  if doc["output_vocab_slice"] else "")),
        ("length", str(doc["seq_len"])),
        ("tokenizer", f"yes, {tok['vocab_size']} tokens ({tok['source']})" if tok["present"]
         else f"no — scans run on token ids ({tok['source']})"),
        ("EMA weights", "available" if doc["ema_available"] else "not in checkpoint"),
        ("scan would use", f"{doc['weights']} weights" + ("" if doc["weights_requested"] else
                                                          f" (default for this format: {doc['weights_default']})")),
        ("time input", doc["time_input_description"]),
        ("schedule", ", ".join(f"{k}={v}" for k, v in doc["schedule"].items())),
        ("output", doc["output"]),
    ]
    rows += [(label, str(value)) for label, value in (doc.get("family_details") or {}).items()]
    if doc.get("hub"):
        rows.append(("hub", f"{doc['hub'].get('hub_id')} @ {doc['hub'].get('revision')}"))
    for note in doc["notes"]:
        rows.append(("note", note))
    return rows
