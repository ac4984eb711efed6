"""DiffusionGemma (Google's block-diffusion Gemma 4): loaded through transformers' own classes.

    config.json                    model_type 'diffusion_gemma' (DiffusionGemmaConfig: text_config,
                                   vision_config, canvas_length, tie_word_embeddings)
    model.safetensors              weights, or model.safetensors.index.json + its shards
    generation_config.json         (optional) the entropy-bound sampler's settings
    tokenizer.json (optional)      a `tokenizers` tokenizer; tokenizer_config.json / chat_template.jinja
                                   may hold a chat template

The network is `transformers.DiffusionGemmaForBlockDiffusion` (transformers ≥ MIN_TRANSFORMERS, no
remote code): a causal encoder reads the prompt into a KV cache, a bidirectional decoder refines a
canvas of `canvas_length` tokens from it. The decoder takes no time input (the family is
*time-free*) and the prompt as context (*prompt-conditioned*); it also takes self-conditioning: the
softmax of the previous step's logits, mapped through the embeddings. The Denoiser here declares
both properties, carries its prompt, and brings the family's own sampler (memaudit.block_sampling:
uniform random canvas, entropy-bound acceptance, uniform re-noising of the rejected tokens).

Before a weight is read, the memory the model needs is estimated from the config alone (the
parameters of the network built on the meta device × the bytes of the stored dtype, plus the
activations and [canvas × vocabulary] logits of one canvas) and a model that does not fit the budget
(--max-memory, else the memory available) is refused with the estimate: a LoadError (exit 4).

The vision tower is built and loaded with the rest, because transformers' DiffusionGemmaEncoderModel
always constructs it (about 0.7 % of the 26B-A4B model's parameters); memaudit never calls it and
passes no image. A config without a text_config (a vision-only config) is refused.
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..denoiser import Denoiser
from ..diffusion import LogLinearSchedule, log_softmax_
from . import Adapter, LoadError, file_sha256, read_json, regular_file
from .common import folder_config

# The first transformers release with models/diffusion_gemma (PyPI wheels: absent in 5.10.4, present in
# 5.11.0 with the forward signature used here: input_ids, decoder_input_ids, self_conditioning_logits).
MIN_TRANSFORMERS = "5.11.0"
MODEL_TYPES = ("diffusion_gemma",)
INSTALL_HINT = f"pip install 'memaudit-dlm[hub]' (transformers >= {MIN_TRANSFORMERS})"
# transformers' generation defaults (DiffusionGemmaGenerationConfig._get_default_generation_params),
# used where generation_config.json does not set a value.
GENERATION_DEFAULTS = {"max_denoising_steps": 48, "entropy_bound": 0.1, "t_min": 0.4, "t_max": 0.8,
                       "stability_threshold": 1, "confidence_threshold": 0.005}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SELF_CONDITIONING = ("none", "self")
# Activations of one canvas: float32 values per (prompt + canvas) token and hidden unit kept alive
# at the peak of a decoder layer (residual, norms, q/k/v, attention output, the dense MLP and the
# routed experts' hidden layers), and [canvas × V] float32 tensors (logits, self-conditioning
# softmax, log-probabilities, the sampler's probabilities).
HIDDEN_TENSORS = 24
VOCAB_TENSORS = 5


def transformers_classes():
    """(DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion), or a LoadError naming what to install."""
    try:
        import transformers
    except ImportError:
        raise LoadError(f"DiffusionGemma checkpoints load through transformers, which is not installed: "
                        f"{INSTALL_HINT}") from None
    try:
        from transformers.models.diffusion_gemma import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
    except ImportError:
        raise LoadError(f"transformers {transformers.__version__} has no DiffusionGemma; memaudit needs "
                        f"transformers >= {MIN_TRANSFORMERS} for it: {INSTALL_HINT}") from None
    return DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion


def weight_files(folder: Path) -> tuple[list[Path], Path]:
    """The safetensors files of a folder, checked (index readable, every shard a regular file inside
    the folder) before any is read. → (files, the file that names them)."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if os.path.lexists(single):
        regular_file(single, "weights")
        return [single], single
    if os.path.lexists(index):
        from .hf import index_shards

        shards = index_shards(folder, index)
        for path in shards:
            regular_file(path, "weight shard")
        return shards, index
    if os.path.lexists(folder / "pytorch_model.bin"):
        raise LoadError(f"{folder}: DiffusionGemma weights are read from safetensors only; pytorch_model.bin "
                        f"is a pickle (convert it with transformers' save_pretrained)")
    raise LoadError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def stored_dtype(files: list[Path], cfg: dict) -> torch.dtype:
    """The dtype the weights are stored in: the first floating tensor's (safetensors header), else
    the config's."""
    from safetensors import SafetensorError, safe_open

    for f in files:
        try:
            with safe_open(str(f), framework="pt") as handle:
                for key in handle.keys():
                    dtype = handle.get_slice(key).get_dtype()
                    mapped = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}.get(dtype)
                    if mapped is not None:
                        return mapped
        except (SafetensorError, OSError) as e:
            raise LoadError(f"{f}: unreadable or truncated safetensors file ({str(e).splitlines()[0]})") from None
    named = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return DTYPES.get(named, torch.float32)


def count_parameters(config, model_cls) -> tuple[int, int]:
    """(text parameters, vision parameters) of the network `config` describes, counted on the meta
    device (nothing allocated; tied parameters counted once)."""
    with torch.device("meta"), contextlib.redirect_stderr(io.StringIO()):
        model = model_cls(config)
    text = vision = 0
    for name, p in model.named_parameters():
        if ".vision_tower." in name or ".embed_vision." in name:
            vision += p.numel()
        else:
            text += p.numel()
    return text, vision


def estimate_bytes(config, n_parameters: int, dtype: torch.dtype, prompt_len: int = 64, batch: int = 1) -> dict:
    """Memory of the model and of one batch of canvases, in bytes."""
    text = config.text_config
    canvas = int(config.canvas_length)
    tokens = prompt_len + canvas

    def field(name: str, default: int = 0) -> int:  # per-layer attributes vary: the largest layer's
        values = []
        with contextlib.suppress(Exception):
            values.append(text.to_dict().get(name))
        with contextlib.suppress(Exception):
            layers = text.per_layer_config
            values += [getattr(layers[i], name, None) for i in range(int(text.num_hidden_layers))]
        values = [int(v) for v in values if isinstance(v, int) and not isinstance(v, bool)]
        return max(values) if values else default

    weights = n_parameters * torch.empty((), dtype=dtype).element_size()
    kv = 2 * field("num_hidden_layers", 1) * field("num_key_value_heads", 1) * field("head_dim", 1) * tokens * 4
    hidden = HIDDEN_TENSORS * tokens * max(field("hidden_size", 1), field("moe_intermediate_size"),
                                            field("intermediate_size")) * 4
    vocab = VOCAB_TENSORS * canvas * field("vocab_size", 1) * 4
    per_canvas = kv + hidden + vocab
    return {"weights": weights, "per_canvas": per_canvas, "total": weights + batch * per_canvas}


def _gib(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def check_budget(estimate: dict, max_memory: int | None, source: str, device: str | None = None) -> None:
    """LoadError (exit 4) before any weight is read when the model and one canvas exceed the budget."""
    from ..budget import available_memory

    if max_memory is not None:
        budget, what = int(max_memory), "--max-memory"
    else:
        budget, what = available_memory(device or "cpu"), "the memory available"
    if estimate["total"] > budget:
        fits = max(0, budget - estimate["per_canvas"])
        raise LoadError(f"{source}: DiffusionGemma needs about {_gib(estimate['total'])} "
                        f"({_gib(estimate['weights'])} of weights + {_gib(estimate['per_canvas'])} per canvas), more "
                        f"than {what} ({_gib(budget)}); refusing before reading any weight — a model with at most "
                        f"{_gib(fits)} of weights would fit (a larger machine, a GPU, or --max-memory)")


@dataclass
class DiffusionGemmaDenoiser(Denoiser):
    """DiffusionGemmaForBlockDiffusion behind the Denoiser contract: (canvas [B, L], t) → x0
    log-probabilities [B, L, V] float32, conditioned on `prompt_ids`; t is ignored (time-free).

    self_conditioning: what the decoder's self-conditioning input is when the probe and recovery
    call the denoiser — 'none' (zeros, the family's first denoising step) or 'self' (two passes: the
    logits of a first pass on the same canvas fed back, as at the end of the family's sampler, where
    the canvas has stopped changing). The family's own sampler always feeds the previous step's
    processed logits, as transformers' generate does.
    """

    prompt_ids: tuple = ()
    prompts: tuple = ()                 # every prompt of the run (token-id tuples); prompt_ids is the active one
    prompt_texts: tuple = ()
    prompt_source: str = "bos"
    self_conditioning: str = "self"
    generation: dict = field(default_factory=dict)
    chat_template: str | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    prompt_conditioned = True
    own_sampler = True
    calibration_family = "diffusion_gemma"

    def sampler_steps(self, requested: int) -> int:
        """The steps the family's sampler runs from a random canvas: the model's generation config."""
        return int(self.generation.get("max_denoising_steps", requested))

    def with_prompt(self, prompt_ids) -> "DiffusionGemmaDenoiser":
        """A shallow copy conditioned on another prompt (token ids)."""
        import copy

        run = copy.copy(self)
        run.prompt_ids = tuple(int(i) for i in prompt_ids)
        return run

    def _prompt(self, batch: int, device) -> torch.Tensor:
        ids = self.prompt_ids or ((self.bos_token_id if self.bos_token_id is not None else 2),)
        return torch.tensor(ids, dtype=torch.long, device=device).unsqueeze(0).expand(batch, -1)

    def raw_logits(self, tokens: torch.Tensor, self_conditioning_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The network's logits [B, L, V] float32 on the canvas `tokens` [B, L] under the active
        prompt, with the given self-conditioning logits (None: zeros)."""
        device = self.device
        tokens = tokens.to(device)
        prompt = self._prompt(tokens.shape[0], device)
        with torch.no_grad():
            out = self.model(input_ids=prompt, decoder_input_ids=tokens,
                             self_conditioning_logits=self_conditioning_logits, use_cache=True)
        return out.logits.float()

    def log_probs(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = self.raw_logits(tokens)
        if self.self_conditioning == "self":
            logits = self.raw_logits(tokens, logits)
        return log_softmax_(logits.contiguous())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def architecture(self) -> dict:
        text = self.model.config.text_config
        return {"class": type(self.model).__name__, "hidden_size": text.hidden_size,
                "n_layers": text.num_hidden_layers, "n_heads": text.num_attention_heads,
                "n_kv_heads": text.num_key_value_heads, "head_dim": text.head_dim,
                "num_experts": text.num_experts, "top_k_experts": text.top_k_experts,
                "moe_intermediate_size": text.moe_intermediate_size, "canvas_length": self.seq_len,
                "output_classes": text.vocab_size, "time_conditioning": False,
                "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch.")}

    def family_details(self) -> dict:
        """What `inspect` shows beyond the common fields."""
        est = self.provenance.get("memory_estimate") or {}
        gen = self.generation
        return {"canvas length": f"{self.seq_len} tokens (block diffusion; the canvas is what a scan samples)",
                "prompt template": ("chat template (tokenizer_config / chat_template.jinja): default prompt is its "
                                    "empty user turn") if self.chat_template else
                                   f"none: default prompt is the BOS token ({self.bos_token_id})",
                "experts": f"{self.architecture()['num_experts']} (top {self.architecture()['top_k_experts']} per token)",
                "parameters (text / vision)": f"{self.provenance.get('n_parameters_text', 0):,} / "
                                               f"{self.provenance.get('n_parameters_vision', 0):,} (vision never called)",
                "weight dtype": self.provenance.get("weight_dtype", "?"),
                "memory estimate": f"{est.get('weights', 0) / 2**30:.3f} GiB weights + "
                                   f"{est.get('per_canvas', 0) / 2**30:.3f} GiB per canvas",
                "sampler": (f"the family's own entropy-bound sampler: {gen.get('max_denoising_steps')} steps, "
                            f"entropy bound {gen.get('entropy_bound')}, temperature {gen.get('t_max')}→{gen.get('t_min')}, "
                            f"uniform re-noising of rejected tokens"),
                "self-conditioning": {"self": "probe: the model's own first pass on the same canvas fed back",
                                      "none": "probe: none (zeros)"}[self.self_conditioning],
                "verdict": "inconclusive (outside_domain) until references of this family validate the rule"}

    def describe(self) -> dict:
        out = super().describe()
        out.update({"time_free": True, "prompt_conditioned": True, "calibration_family": self.calibration_family,
                    "self_conditioning": self.self_conditioning,
                    "prompt_source": self.prompt_source, "prompts": [list(p) for p in (self.prompts or
                                                                                      (self.prompt_ids,))],
                    "sampler": {"name": "entropy-bound", **self.generation}})
        return out


def read_generation(path: Path) -> dict:
    gen = dict(GENERATION_DEFAULTS)
    f = path / "generation_config.json"
    if os.path.lexists(f):
        cfg = read_json(f)
        for key in ("max_denoising_steps", "t_min", "t_max", "stability_threshold", "confidence_threshold"):
            if isinstance(cfg.get(key), (int, float)) and not isinstance(cfg.get(key), bool):
                gen[key] = cfg[key]
        sampler = cfg.get("sampler_config")
        if isinstance(sampler, dict) and isinstance(sampler.get("entropy_bound"), (int, float)):
            gen["entropy_bound"] = float(sampler["entropy_bound"])
    return gen


def read_chat_template(path: Path) -> str | None:
    f = path / "chat_template.jinja"
    if os.path.lexists(f):
        regular_file(f)
        return f.read_text(encoding="utf-8", errors="replace")
    f = path / "tokenizer_config.json"
    if os.path.lexists(f):
        template = read_json(f).get("chat_template")
        if isinstance(template, str):
            return template
    return None


class DiffusionGemmaAdapter(Adapter):
    family = "diffusion_gemma"
    description = ("DiffusionGemma (transformers DiffusionGemmaForBlockDiffusion): config.json model_type "
                   "diffusion_gemma + safetensors (single or sharded)")
    takes_memory_budget = True

    def detect(self, path: Path) -> bool:
        cfg = folder_config(path)
        if cfg is None:
            return False
        archs = cfg.get("architectures") if isinstance(cfg.get("architectures"), list) else []
        return str(cfg.get("model_type", "")).lower() in MODEL_TYPES + ("diffusion_gemma_text",) or any(
            isinstance(a, str) and a.startswith("DiffusionGemma") for a in archs)

    def load(self, path: Path, weights: str | None, trust_remote_code: bool, max_memory: int | None = None,
             device: str | None = None) -> Denoiser:
        source = str(path)
        cfg = read_json(path / "config.json")
        kind = str(cfg.get("model_type", "")).lower()
        if kind != "diffusion_gemma":
            raise LoadError(f"{source}: model_type {kind!r}: memaudit loads the full DiffusionGemma "
                            f"(model_type 'diffusion_gemma', DiffusionGemmaForBlockDiffusion)")
        text_cfg = cfg.get("text_config")
        if not isinstance(text_cfg, dict) or not text_cfg:
            raise LoadError(f"{source}: config.json has no text_config (a vision-only config?): DiffusionGemma "
                            f"needs its text model to be probed")
        if weights not in (None, "raw"):
            raise LoadError(f"{source}: DiffusionGemma checkpoints store one set of weights; use --weights raw")
        config_cls, model_cls = transformers_classes()
        from .common import quiet_transformers

        try:
            with quiet_transformers(), contextlib.redirect_stderr(io.StringIO()):
                config = config_cls.from_dict(dict(cfg))
        except Exception as e:  # noqa: BLE001 - a config transformers rejects is a load error, one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LoadError(f"{source}: config.json is not a valid DiffusionGemmaConfig ({first})") from None
        n_text, n_vision = count_parameters(config, model_cls)
        named = DTYPES.get(str(cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16"), torch.bfloat16)
        check_budget(estimate_bytes(config, n_text + n_vision, named), max_memory, source, device)
        files, named_by = weight_files(path)
        dtype = stored_dtype(files, cfg)
        estimate = estimate_bytes(config, n_text + n_vision, dtype)
        check_budget(estimate, max_memory, source, device)
        try:
            with quiet_transformers(), contextlib.redirect_stderr(io.StringIO()):
                model = model_cls.from_pretrained(str(path), config=config, dtype=dtype, local_files_only=True,
                                                  trust_remote_code=False, use_safetensors=True)
        except Exception as e:  # noqa: BLE001 - corrupt or mismatched weights: one line, exit 4
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LoadError(f"{source}: transformers could not load the weights ({first[:300]})") from None
        model.eval()
        text = config.text_config
        tokenizer = None
        files_hashes = {"config.json": file_sha256(path / "config.json"),
                        **{f.name: file_sha256(f) for f in files}}
        if named_by not in files:
            files_hashes[named_by.name] = file_sha256(named_by)
        if os.path.lexists(path / "tokenizer.json"):
            from .native import load_tokenizer

            tokenizer = load_tokenizer(path / "tokenizer.json")
            files_hashes["tokenizer.json"] = file_sha256(path / "tokenizer.json")
        generation = read_generation(path)
        chat_template = read_chat_template(path)
        eos = text.eos_token_id[0] if isinstance(text.eos_token_id, list) else text.eos_token_id
        notes = [f"loaded through transformers' {model_cls.__name__} (no remote code), weights {str(dtype)[6:]}",
                 "time-free: the decoder has no time input; t only sets how much a canvas is re-noised",
                 "the vision tower is loaded (transformers always builds it) but never called: text only"]
        provenance = {
            "checkpoint": str(path.resolve()), "files": files_hashes, "format": "hf-diffusion_gemma",
            "codebase": "transformers", "algorithm": "block diffusion (entropy-bound sampler)",
            "diffusion": "uniform (block diffusion, time-free, prompt-conditioned)",
            "ema_available": False, "weights_default": "raw", "modeling_code": "transformers",
            "tokenizer_source": "tokenizer.json" if tokenizer is not None else "none",
            "n_parameters_text": n_text, "n_parameters_vision": n_vision,
            "memory_estimate": {k: int(v) for k, v in estimate.items()},
            "weight_dtype": str(dtype).removeprefix("torch."), "notes": notes,
            "output": "x0 log-probabilities: log_softmax of the decoder's soft-capped logits",
        }
        from .common import hub_provenance, jsonable

        provenance.update(hub_provenance(path))
        return DiffusionGemmaDenoiser(
            model=model, schedule=LogLinearSchedule(eps=1e-3), vocab_size=int(text.vocab_size),
            seq_len=int(config.canvas_length), tokenizer=tokenizer, family="diffusion_gemma", weights="raw",
            time_input="none", provenance=provenance, config=jsonable(cfg), generation=generation,
            chat_template=chat_template, bos_token_id=text.bos_token_id, eos_token_id=eos,
            pad_token_id=text.pad_token_id)
