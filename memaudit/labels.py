"""The one name of a checkpoint in every report (standard library only, so the scan, recovery and
the report writers all import it without importing each other)."""
from __future__ import annotations

IN_MEMORY = "(in-memory model)"


def checkpoint_label(model: dict | None) -> str | None:
    """The hub id (with its revision) of a hub checkpoint, else the local path its adapter recorded
    (already resolved: absolute, no trailing slash); None for an in-memory model. `model` is a
    report's model provenance (`Denoiser.describe()`)."""
    model = model or {}
    if model.get("hub_id"):
        return str(model["hub_id"]) + (f"@{model['revision']}" if model.get("revision") else "")
    return str(model["checkpoint"]) if model.get("checkpoint") else None
