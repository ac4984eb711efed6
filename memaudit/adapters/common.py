"""Helpers shared by the adapters for foreign DDiT checkpoints (Duo, UDLM, UNI-D2, SEDD, GIDD).

Everything here works on plain data: state dicts of tensors, plain-dict configs, `Inert` records
from the restricted unpickler. Nothing imports or runs code from a checkpoint.
"""
from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from ..diffusion import Schedule, check_float, schedule_from_dict
from ..model import MAX_SEQ_LEN, DDiT, DDiTConfig
from . import LoadError, read_limited
from .native import check_before_build, load_state_into
from .safe_pickle import MAX_CONFIG_NODES, Inert, NodeBudget, check_tensor_geometry, global_name, iter_inert

MASKED_REASON = ("masked (absorbing-state) diffusion: its x0 prediction copies every unmasked token, so "
                 "the entropy memaudit measures is zero off-mask by construction, not by memorization")

# Buffers some backbones keep in their state dicts; never parameters, never in EMA lists.
ROTARY_BUFFERS = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")


# ---------------------------------------------------------------------------------------- config
def cfg_get(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return default
    return node


def folder_config(path: Path) -> dict | None:
    """The config.json object of a model folder, for detection; None when `path` is not a folder with
    a readable JSON config."""
    from . import LoadError, read_json

    if not path.is_dir() or not (path / "config.json").is_file():
        return None
    try:
        return read_json(path / "config.json")
    except LoadError:
        return None


def as_bool(value: Any, what: str, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise LoadError(f"{source}: {what} must be true or false, found {value!r}")


def as_int(value: Any, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LoadError(f"{source}: {what} must be an integer, found {value!r:.60}")
    try:
        out = int(str(value).replace("_", "")) if not isinstance(value, float) else int(value)
    except (ValueError, OverflowError):
        raise LoadError(f"{source}: {what} must be an integer, found {value!r:.60}") from None
    if isinstance(value, float) and value != out:
        raise LoadError(f"{source}: {what} must be an integer, found {value!r:.60}")
    return out


def as_float(value: Any, what: str, source: str) -> float:
    try:
        return check_float(value, what)
    except ValueError as e:
        raise LoadError(f"{source}: {e}") from None


def read_yaml(path: Path) -> Any:
    """A YAML file (a Hydra `config.yaml`) as plain data: `yaml.safe_load`, which builds only dicts,
    lists and scalars and never constructs Python objects from tags. Read through read_limited
    (64 MiB); aliases become shared references, and every walk over the result is bounded
    (NodeBudget)."""
    try:
        text = read_limited(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise LoadError(f"{path}: unreadable ({e})") from None
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise LoadError(f"{path}: not valid YAML (nested too deeply)") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LoadError(f"{path}: not valid YAML ({first})") from None
    except (ValueError, TypeError, OverflowError) as e:  # a scalar safe_load cannot build: date 2024-13-45
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LoadError(f"{path}: not valid YAML ({first})") from None


# ------------------------------------------------------------------------------------- schedules
def make_schedule(name: str, source: str, where: str = "noise", **fields: Any) -> Schedule:
    """The schedule `name` with `fields`, through the one lookup (diffusion.schedule_from_dict), so
    every format's fields are validated alike; a refusal is a LoadError naming the checkpoint and
    the field (`noise.eps must be a number in (0, 1) …`)."""
    try:
        return schedule_from_dict({"name": name, **fields}, where)
    except ValueError as e:
        raise LoadError(f"{source}: {e}") from None


# ----------------------------------------------------------------------------------- state dicts
def is_tensor_dict(d: Any) -> bool:
    return isinstance(d, dict) and bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in d.items())


def strip_prefix(state: dict, prefix: str) -> dict:
    """Entries under `prefix` with the prefix removed, in the checkpoint's own order."""
    return {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}


def parameter_names(state: dict) -> list[str]:
    """Parameters of the backbone in `backbone.parameters()` order: the state dict's order without
    buffers and without tied duplicates (a tied weight appears twice in a state dict, once in
    parameters())."""
    names: list[str] = []
    seen: set = set()  # one pass, not a pairwise comparison: a state dict can hold 10^5 tensors
    for name, tensor in state.items():
        if name in ROTARY_BUFFERS:
            continue
        key = _tensor_key(tensor)
        if key in seen:
            continue
        seen.add(key)
        names.append(name)
    return names


def _tensor_key(t: torch.Tensor) -> tuple:
    """The identity of a tensor view: storage, dtype, offset, shape and stride (a tied weight appears
    twice in a state dict with the same key)."""
    return (t.untyped_storage().data_ptr(), t.dtype, t.storage_offset(), tuple(t.shape), t.stride())


def ema_state(ema: Any, backbone: dict, source: str) -> tuple[dict, int]:
    """Zip an EMA `shadow_params` list onto the backbone's parameter names.

    → (named EMA state, number of trailing shadow entries that belong to other modules, e.g. the
    noise schedule's parameters in `itertools.chain(backbone.parameters(), noise.parameters())`).
    """
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    if not isinstance(shadow, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in shadow):
        raise LoadError(f"{source}: EMA state has no list of shadow_params; use --weights raw")
    names = parameter_names(backbone)
    if len(shadow) < len(names):
        raise LoadError(f"{source}: EMA has {len(shadow)} shadow parameters but the backbone has "
                        f"{len(names)}; use --weights raw")
    out: dict[str, torch.Tensor] = {}
    for i, name in enumerate(names):
        if tuple(shadow[i].shape) != tuple(backbone[name].shape):
            raise LoadError(f"{source}: EMA shadow parameter {i} has shape {tuple(shadow[i].shape)} but "
                            f"{name} has {tuple(backbone[name].shape)} (positional EMA does not match the "
                            f"parameter order); use --weights raw")
        out[name] = shadow[i]
    first = {_tensor_key(backbone[n]): n for n in names}
    for name, tensor in backbone.items():  # tied duplicates share their twin's EMA
        if name not in out and name not in ROTARY_BUFFERS:
            out[name] = out[first[_tensor_key(tensor)]]
    return out, len(shadow) - len(names)


def drop_rotary_buffers(state: dict, arch: DDiTConfig, source: str) -> dict:
    """Remove rotary buffers after checking they hold the standard base-10000 frequencies."""
    head_dim = arch.hidden_size // arch.n_heads
    inv_freq = 1.0 / (10_000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    if "rotary_emb.inv_freq" in state:
        got = state["rotary_emb.inv_freq"].float()
        if got.shape != inv_freq.shape or not torch.allclose(got, inv_freq, rtol=1e-4, atol=1e-6):
            raise LoadError(f"{source}: rotary_emb.inv_freq does not match a base-10000 rotary embedding "
                            f"with head size {head_dim} (check n_heads)")
    if "rotary_emb.cos_cached" in state:  # GIDD: [1, L_max, 3, 1, head_dim] with v set to identity
        cos = state["rotary_emb.cos_cached"].float()
        if cos.dim() != 5 or cos.shape[-1] != head_dim:
            raise LoadError(f"{source}: rotary_emb.cos_cached has shape {tuple(cos.shape)}, expected head size "
                            f"{head_dim} (check the number of attention heads)")
        if cos.shape[1] < arch.seq_len:  # the one place a checkpoint stores its length in the weights
            raise LoadError(f"{source}: the sequence length {arch.seq_len} is longer than the stored rotary "
                            f"cache rotary_emb.cos_cached ({cos.shape[1]} positions)")
        n = min(cos.shape[1], 64)
        pos = torch.arange(n, dtype=torch.float32)
        freqs = torch.outer(pos, inv_freq)
        ref = torch.cat([freqs, freqs], dim=-1).cos()
        if not torch.allclose(cos[0, :n, 0, 0, :], ref, atol=1e-4):
            raise LoadError(f"{source}: rotary_emb.cos_cached is not a base-10000 rotary embedding")
    return {k: v for k, v in state.items() if k not in ROTARY_BUFFERS}


def arch_from_config(state: dict, cfg: Any, keys: dict[str, str], *, time_conditioning: bool, source: str,
                     seq_len: Any = None) -> DDiTConfig:
    """arch_from_state with n_heads, seq_len (unless given) and the declared hidden_size / cond_dim /
    n_blocks read from `cfg` under the family's own (dotted) names in `keys`."""
    return arch_from_state(state, n_heads=cfg_get(cfg, keys["n_heads"]),
                           seq_len=cfg_get(cfg, keys["seq_len"]) if seq_len is None else seq_len,
                           time_conditioning=time_conditioning, source=source,
                           declared={f: cfg_get(cfg, keys[f]) for f in ("hidden_size", "cond_dim", "n_blocks")},
                           keys=keys)


def arch_from_state(state: dict, *, n_heads: Any, seq_len: Any, time_conditioning: bool, source: str,
                    declared: dict | None = None, keys: dict | None = None) -> DDiTConfig:
    """The DDiT shape implied by the weights (tensors or plain shapes), cross-checked against what the
    config declares. keys: the config's own names for n_heads / seq_len / declared fields, for messages."""
    keys = keys or {}
    for key in ("vocab_embed.embedding", "sigma_map.mlp.0.weight", "output_layer.linear.weight"):
        if key not in state:
            raise LoadError(f"{source}: missing weights {key}")
    emb = _shape(state["vocab_embed.embedding"])
    if len(emb) != 2 or 0 in emb:
        raise LoadError(f"{source}: vocab_embed.embedding has shape {emb}, expected (V, d)")
    vocab, hidden = emb
    sig = _shape(state["sigma_map.mlp.0.weight"])
    if len(sig) != 2 or sig[1] != 256 or sig[0] == 0:
        raise LoadError(f"{source}: sigma_map.mlp.0.weight has shape {sig}, expected (cond_dim, 256)")
    cond_dim = sig[0]
    block_ids = sorted({int(m.group(1)) for k in state for m in [re.match(r"blocks\.(\d{1,9})\.", k)] if m})
    if not block_ids or block_ids != list(range(len(block_ids))):
        raise LoadError(f"{source}: transformer blocks missing or not numbered 0..N-1")
    n_blocks = len(block_ids)
    if "blocks.0.mlp.0.weight" not in state:
        raise LoadError(f"{source}: missing weights blocks.0.mlp.0.weight")
    mlp0 = _shape(state["blocks.0.mlp.0.weight"])
    if len(mlp0) != 2 or mlp0[1] != hidden or mlp0[0] % hidden or mlp0[0] == 0:
        raise LoadError(f"{source}: blocks.0.mlp.0.weight has shape {mlp0}, inconsistent with "
                        f"hidden size {hidden}")
    mlp_ratio = mlp0[0] // hidden
    heads_key, len_key = keys.get("n_heads", "n_heads"), keys.get("seq_len", "sequence length")
    n_heads = as_int(n_heads, f"number of attention heads ({heads_key})", source)
    seq_len = as_int(seq_len, f"sequence length ({len_key})", source)
    if n_heads <= 0 or hidden % n_heads:
        raise LoadError(f"{source}: hidden size {hidden} is not divisible by {heads_key} {n_heads}")
    if seq_len <= 0:
        raise LoadError(f"{source}: invalid sequence length {len_key} = {seq_len}")
    if seq_len > MAX_SEQ_LEN:
        raise LoadError(f"{source}: {len_key} = {seq_len} is longer than the {MAX_SEQ_LEN} tokens memaudit accepts "
                        f"(rotary embeddings have no weights to check a length against)")
    found = {"hidden_size": hidden, "cond_dim": cond_dim, "n_blocks": n_blocks}
    for key, value in (declared or {}).items():
        if value is None:
            continue
        name = keys.get(key, key)
        value = as_int(value, name, source)
        if value != found[key]:
            raise LoadError(f"{source}: config says {name} = {value} but the weights have {found[key]} "
                            f"(wrong shapes for this config)")
    arch = DDiTConfig(vocab_size=int(vocab), seq_len=seq_len, hidden_size=int(hidden), cond_dim=int(cond_dim),
                      n_blocks=n_blocks, n_heads=n_heads, mlp_ratio=int(mlp_ratio), dropout=0.0,
                      time_conditioning=bool(time_conditioning))
    try:
        return arch.validate("model")
    except ValueError as e:
        raise LoadError(f"{source}: {e}") from None


def _shape(value: Any) -> tuple:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)


def build_model(arch: DDiTConfig, state: dict, source: str) -> DDiT:
    """DDiT(arch) with `state` loaded, after every check that needs no allocation: tensor geometry
    within storages, exact shapes and dtypes, memory for the model (check_before_build)."""
    check_tensor_geometry(state, source)
    check_before_build(arch, state, source)
    try:
        model = DDiT(arch)
    except ValueError as e:
        raise LoadError(f"{source}: {e}") from None
    load_state_into(model, {k: v for k, v in state.items()}, source)
    return model


# ------------------------------------------------------------------------------------ tokenizers
def _json_tokenizer(inert: Inert):
    from .tokenizer_json import tokenizer_from_json

    raw = inert.state
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", errors="strict")
    if not isinstance(raw, str):
        return None
    # checked, then parsed into the Rust structs (nothing is executed); padding and truncation off
    return tokenizer_from_json(raw, "the pickled tokenizers.Tokenizer")


def _added_tokens(state: dict) -> dict[int, str]:
    out: dict[int, str] = {}
    decoder = state.get("_added_tokens_decoder")
    if isinstance(decoder, dict):
        for i, tok in decoder.items():
            content = tok.state.get("content") if isinstance(tok, Inert) and isinstance(tok.state, dict) else tok
            if isinstance(i, int) and isinstance(content, str):
                out[i] = content
    encoder = state.get("added_tokens_encoder")
    if isinstance(encoder, dict):
        for content, i in encoder.items():
            if isinstance(i, int) and isinstance(content, str):
                out.setdefault(i, content)
    return out


def _wordpiece_tokenizer(state: dict):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = state.get("vocab")
    if not isinstance(vocab, dict) or not vocab or not all(isinstance(k, str) and isinstance(v, int)
                                                           for k, v in vocab.items()):
        return None
    lower = True
    for holder in (state.get("basic_tokenizer"), state.get("init_kwargs")):
        st = holder.state if isinstance(holder, Inert) else holder
        if isinstance(st, dict) and isinstance(st.get("do_lower_case"), bool):
            lower = st["do_lower_case"]
            break
    unk = "[UNK]" if "[UNK]" in vocab else next(iter(vocab))
    tok = Tokenizer(models.WordPiece(dict(vocab), unk_token=unk, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lower)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return tok


def _bytelevel_bpe_tokenizer(state: dict):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    encoder, ranks = state.get("encoder"), state.get("bpe_ranks")
    if not isinstance(encoder, dict) or not isinstance(ranks, dict) or not encoder:
        return None
    pairs = sorted(((r, p) for p, r in ranks.items() if isinstance(p, tuple) and len(p) == 2 and isinstance(r, int)))
    tok = Tokenizer(models.BPE(dict(encoder), [p for _, p in pairs]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def tokenizer_from_pickle(obj: Any) -> tuple[Any, str]:
    """Rebuild a `tokenizers.Tokenizer` from a pickled tokenizer record, when it carries enough state.

    → (tokenizer or None, how it was obtained / why not). Fast tokenizers carry their full
    `tokenizers` JSON; slow BERT (WordPiece vocab) and GPT-2 (BPE encoder + ranks) tokenizers are
    rebuilt from their vocabularies. Anything else: None, and the scan runs on token ids.
    """
    if obj is None:
        return None, "no tokenizer in the checkpoint"
    if not isinstance(obj, Inert):
        return None, f"tokenizer entry is a {type(obj).__name__}, not a tokenizer object"
    try:
        if obj.global_name == "tokenizers.Tokenizer":
            tok = _json_tokenizer(obj)
            if tok is not None:
                return tok, "tokenizers JSON"
        for rec in iter_inert(obj, max_depth=3):
            if rec.global_name == "tokenizers.Tokenizer":
                tok = _json_tokenizer(rec)
                if tok is not None:
                    return tok, f"tokenizers JSON inside {obj.global_name}"
        state = obj.state if isinstance(obj.state, dict) else {}
        for builder, how in ((_wordpiece_tokenizer, "WordPiece vocabulary"), (_bytelevel_bpe_tokenizer, "byte-level BPE")):
            tok = builder(state)
            if tok is not None:
                added = _added_tokens(state)
                base = tok.get_vocab_size(with_added_tokens=True)
                for i in sorted(added):
                    if i >= base:
                        from tokenizers import AddedToken

                        if i != tok.get_vocab_size(with_added_tokens=True):
                            return None, f"added tokens of {obj.global_name} are not contiguous"
                        tok.add_special_tokens([AddedToken(added[i], special=True)])
                return tok, f"{how} of {obj.global_name}"
    except Exception as e:  # noqa: BLE001 - a tokenizer we cannot rebuild is not fatal
        return None, f"could not rebuild {obj.global_name} ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None, f"{obj.global_name} carries no vocabulary memaudit can rebuild"


def check_tokenizer_vocab(tokenizer, vocab_size: int, source: str, extra_ok: int = 1) -> None:
    """A tokenizer may have up to `extra_ok` fewer tokens than the model (a mask slot the model
    carries but the tokenizer does not); more tokens, or far fewer, is a vocabulary mismatch."""
    if tokenizer is None:
        return
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    if n > vocab_size or n < vocab_size - extra_ok:
        raise LoadError(f"{source}: vocabulary mismatch: tokenizer has {n} tokens, model has {vocab_size}")


# -------------------------------------------------------------------------------- provenance, misc
def hub_provenance(path: Path) -> dict:
    """If `path` is a huggingface_hub cache snapshot (…/models--org--name/snapshots/<sha>/…), the
    repo id and resolved revision it came from."""
    parts = Path(path).resolve().parts
    for i in range(len(parts) - 2):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots":
            repo = parts[i][len("models--"):].replace("--", "/")
            return {"hub_id": repo, "revision": parts[i + 2]}
    return {}


def remote_code_note(trust_remote_code: bool) -> list[str]:
    if not trust_remote_code:
        return []
    from ..progress import console

    note = ("--trust-remote-code ignored: memaudit loads this family natively and never runs "
            "modeling code shipped with a checkpoint")
    console.print(f"[yellow]memaudit:[/] {note}", highlight=False)
    return [note]


@contextlib.contextmanager
def quiet_transformers():
    """transformers' logging held at errors and its progress bars off while it loads a tokenizer or
    model: its advice (deprecations, unused weights) would break the one-line stderr contract of a
    failing run, and memaudit shows progress bars only on a terminal, its own."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def jsonable(obj: Any, depth: int = 0, _budget: NodeBudget | None = None) -> Any:
    """A JSON-safe copy of a plain config: records and tensors become short strings. Bounded: a config
    of more than MAX_CONFIG_NODES nodes (shared references can make a small file a huge tree) is a
    LoadError."""
    budget = _budget or NodeBudget(MAX_CONFIG_NODES, "config")
    budget.visit()
    if depth > 50:
        return "…"
    if isinstance(obj, dict):
        return {str(k): jsonable(v, depth + 1, budget) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, depth + 1, budget) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    name = global_name(obj)
    if name:
        return f"<{name}>"
    if isinstance(obj, torch.Tensor):
        return f"<tensor {list(obj.shape)}>"
    return f"<{type(obj).__name__}>"
