"""Hub ids (`org/name[@revision]`) resolved through huggingface_hub, when it is installed.

A local path always wins (see `resolve`). Offline mode (HF_HUB_OFFLINE=1) is honoured by
huggingface_hub itself: only the local cache is consulted. Only data files are fetched (configs,
weights, tokenizers, YAML) — never `*.py` modeling code. The snapshot folder returned lives in the
hub cache as `…/models--org--name/snapshots/<commit>`; adapters record that repo id and resolved
commit in their provenance (common.hub_provenance).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
DATA_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.ckpt", "*.pth", "*.yaml", "*.txt", "*.model"]


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_hub_id(hub_id: str) -> Path:
    from . import LoadError

    if not HUB_ID.match(hub_id):
        raise LoadError(f"no such file or directory: {hub_id}")
    try:
        import huggingface_hub
    except ImportError:
        raise LoadError(f"no such file or directory: {hub_id} (to resolve it as a hub id, "
                        f"pip install 'memaudit[hub]')") from None
    repo_id, _, revision = hub_id.partition("@")
    try:
        local = huggingface_hub.snapshot_download(repo_id, revision=revision or None,
                                                  allow_patterns=DATA_PATTERNS)
    except Exception as e:  # network, auth, missing repo: all "could not resolve"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = " (offline: HF_HUB_OFFLINE is set and it is not in the local cache)" if offline() else ""
        raise LoadError(f"no such file or directory, and could not resolve hub id {hub_id}{where}: "
                        f"{first_line}") from None
    return Path(local)
