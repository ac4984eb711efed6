"""Hub ids (`org/name[@revision]`, and bare tokenizer names such as `gpt2`) resolved through
huggingface_hub, when it is installed.

A local path always wins (see `resolve`). Offline mode (HF_HUB_OFFLINE=1) and the cache location
(HF_HUB_CACHE, HF_HOME) are read when a name is resolved, not when huggingface_hub was imported,
and passed to it explicitly: only the local cache is consulted offline. Only data files are fetched
(configs, weights, tokenizers, YAML); `*.py` modeling code only when the caller runs it anyway
(`--trust-remote-code`). The snapshot folder returned lives in the hub cache as
`…/models--org--name/snapshots/<commit>`; adapters record that repo id and resolved commit in their
provenance (common.hub_provenance).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
# Tokenizers may be named without an organisation (`bert-base-uncased`, `gpt2`): the hub's legacy
# top-level names, which huggingface_hub still resolves.
TOKENIZER_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(@[\w./-]+)?$")
DATA_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.ckpt", "*.pth", "*.yaml", "*.txt", "*.model"]
TOKENIZER_PATTERNS = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                      "vocab.json", "merges.txt", "added_tokens.json", "config.json", "*.model"]
CODE_PATTERNS = ["*.py"]


def offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cache_dir() -> str | None:
    """The hub cache as the environment names it now (None: huggingface_hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    return None


def download(name: str, patterns: list[str], what: str, pattern: re.Pattern = HUB_ID) -> Path:
    """The local snapshot folder of hub repo `name[@revision]` with the files matching `patterns`."""
    from . import LoadError

    if not pattern.match(name):
        raise LoadError(f"no such file or directory: {name}")
    try:
        import huggingface_hub
    except ImportError:
        raise LoadError(f"no such file or directory: {name} (to resolve it as a hub id, "
                        f"pip install 'memaudit-dlm[hub]')") from None
    repo_id, _, revision = name.partition("@")
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    bars = not are_progress_bars_disabled()
    if bars and not sys.stderr.isatty():  # download bars only on a terminal, like memaudit's own
        disable_progress_bars()
    try:
        local = huggingface_hub.snapshot_download(repo_id, revision=revision or None, allow_patterns=patterns,
                                                  cache_dir=cache_dir(), local_files_only=offline())
    except Exception as e:  # network, auth, missing repo: all "could not resolve"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = " (offline: HF_HUB_OFFLINE is set and it is not in the local cache)" if offline() else ""
        raise LoadError(f"no such file or directory, and could not resolve {what} {name}{where}: "
                        f"{first_line}") from None
    finally:
        if bars and are_progress_bars_disabled():
            enable_progress_bars()
    return Path(local)


def resolve_hub_id(hub_id: str, trust_remote_code: bool = False) -> Path:
    return download(hub_id, DATA_PATTERNS + (CODE_PATTERNS if trust_remote_code else []), "hub id")


def resolve_tokenizer_name(name: str, trust_remote_code: bool = False) -> Path:
    return download(name, TOKENIZER_PATTERNS + (CODE_PATTERNS if trust_remote_code else []), "tokenizer",
                    pattern=TOKENIZER_NAME)
