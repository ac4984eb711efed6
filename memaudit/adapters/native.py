"""memaudit's own checkpoint directory.

    DIR/config.json          {"format": "memaudit", architecture, schedule, tokenizer, provenance}
    DIR/model.safetensors    raw weights, DDiT names (no prefix)
    DIR/ema.safetensors      EMA weights, same names (optional)
    DIR/tokenizer.json       tokenizers JSON (text corpora only)
    DIR/trainer_state.pt     optimizer/step/RNG for --resume (tensors and plain containers only)
    DIR/training_timing.json wall-clock figures of the training run (tokens/s, seconds); never read
                             by a scan. Kept out of config.json, whose hash every report records, so
                             that two trainings with the same settings give the same reports.

Every file is written to a temporary name and renamed; config.json is written last, so a
directory with a config.json always holds a complete checkpoint.

Other modules reach this layout only through the functions here: save_checkpoint, checkpoint_files,
is_checkpoint, read_training_config, read_training_timing, load_trainer_state (train.py,
reference.py) and saved_tokenizer
(report.html); a loaded model's training record is Denoiser.training / Denoiser.training_data.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..denoiser import Denoiser
from ..diffusion import schedule_from_dict
from ..io import atomic_write_bytes
from ..model import DDiT, DDiTConfig
from . import (MAX_TOKENIZER_BYTES, Adapter, LoadError, check_memory, file_sha256, read_json, read_limited,
               regular_file)

FORMAT = "memaudit"
FORMAT_VERSION = 1


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    atomic_write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata))


def save_checkpoint(directory: str | Path, model: DDiT, config: dict, ema_state: dict | None = None,
                    tokenizer=None, trainer_state: dict | None = None, timing: dict | None = None) -> Path:
    """Write a complete native checkpoint. `config` holds everything but the architecture, which
    is taken from the model."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if k != "rotary_emb.inv_freq"}
    atomic_save_tensors(directory / "model.safetensors", state, {"format": "pt"})
    if ema_state is not None:
        atomic_save_tensors(directory / "ema.safetensors", ema_state, {"format": "pt"})
    if tokenizer is not None:
        atomic_write_bytes(directory / "tokenizer.json", tokenizer.to_str().encode())
    if trainer_state is not None:
        buffer = io.BytesIO()
        torch.save(trainer_state, buffer)
        atomic_write_bytes(directory / "trainer_state.pt", buffer.getvalue())
    if timing is not None:
        atomic_write_bytes(directory / TIMING_FILE, (json.dumps(timing, indent=2, sort_keys=True) + "\n").encode())
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.config.to_dict(),
            **config, "tokenizer": {"file": "tokenizer.json"} if tokenizer is not None else None}
    atomic_write_bytes(directory / "config.json", (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    return directory


CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
TOKENIZER_FILE = "tokenizer.json"
# provenance key of a declared tokenizer that could not be loaded: raised by attach_tokenizer unless
# --tokenizer names another (never written to a report)
DEFERRED_TOKENIZER_ERROR = "_tokenizer_error"
TRAINER_STATE_FILE = "trainer_state.pt"
TIMING_FILE = "training_timing.json"


def checkpoint_files(directory: str | Path) -> dict[str, Path]:
    """The paths of a native checkpoint's files (see the module docstring), present or not:
    config, model, ema, tokenizer, trainer_state, timing."""
    directory = Path(directory)
    return {"config": directory / CONFIG_FILE, "model": directory / MODEL_FILE, "ema": directory / EMA_FILE,
            "tokenizer": directory / TOKENIZER_FILE, "trainer_state": directory / TRAINER_STATE_FILE,
            "timing": directory / TIMING_FILE}


def is_checkpoint(directory: str | Path) -> bool:
    """Whether `directory` holds a native checkpoint: its config.json, written last, exists."""
    return checkpoint_files(directory)["config"].exists()


def read_training_config(directory: str | Path) -> dict:
    """The training section memaudit's trainer records in a checkpoint's config.json ({} when it
    has none). LoadError when config.json is missing or unreadable."""
    return read_config(Path(directory)).get("training", {})


def read_training_timing(directory: str | Path) -> dict:
    """The wall-clock figures of the last training session (tokens_per_second, wall_seconds);
    {} when the checkpoint has none (other trainers, or from before they were kept apart)."""
    path = checkpoint_files(directory)["timing"]
    if not path.is_file():
        return {}
    try:
        timing = json.loads(read_limited(path))
    except (ValueError, UnicodeDecodeError):
        return {}
    return timing if isinstance(timing, dict) else {}


def load_trainer_state(directory: str | Path) -> dict:
    """The trainer state (step, optimizer, RNG) that `memaudit train --resume` continues from;
    tensors and plain containers only (weights_only=True), archive members and tensor views
    bounded as for weight files. LoadError (exit 4, one line) for a file torch refuses or one
    without the step, optimizer state and RNG state a resume needs."""
    from .safe_pickle import check_tensor_geometry, check_zip_members

    path = checkpoint_files(directory)["trainer_state"]
    regular_file(path)
    check_zip_members(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - weights_only refusals and corrupt files alike
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        refused = next((ln for ln in lines if ln.startswith(("WeightsUnpickler error", "Trying to load unsupported",
                                                             "Unsupported"))), None)
        if lines[0].startswith("Weights only load failed"):   # torch's first line advises weights_only=False; the reason is further down
            raise LoadError(f"{path}: refusing to load: the trainer state is not plain tensors and containers "
                            f"({(refused or 'torch.load(weights_only=True) refused it')[:200]})") from None
        raise LoadError(f"{path}: cannot read the trainer state ({lines[0][:200]})") from None
    step, optimizer, generator = (state.get(k) for k in ("step", "optimizer", "generator")) \
        if isinstance(state, dict) else (None, None, None)
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0 and isinstance(optimizer, dict)
            and isinstance(generator, torch.Tensor) and generator.dtype == torch.uint8):
        raise LoadError(f"{path}: not a memaudit trainer state (step, optimizer state and RNG state)")
    check_tensor_geometry(optimizer.get("state") if isinstance(optimizer.get("state"), dict) else {}, str(path))
    return state


def saved_tokenizer(directory: str | Path):
    """The tokenizer a local native checkpoint directory holds (tokenizer.json), None when there
    is none; LoadError when it is unreadable. Read as JSON through load_tokenizer: nothing runs."""
    path = checkpoint_files(directory)["tokenizer"]
    if not Path(directory).is_dir() or not path.is_file():
        return None
    return load_tokenizer(path)


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not os.path.lexists(path):
        raise LoadError(f"{directory}: no config.json")
    return read_json(path)


# Weight dtypes memaudit loads: real floating point only. Integer, boolean and complex tensors are
# not DDiT weights (a complex tensor cast to float silently drops its imaginary part).
REAL_FLOAT_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
                     "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


_DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8, "C128": 16}
MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors library's own limit
_TORCH_NAMES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "I32": "int32",
                "U32": "uint32", "I64": "int64", "U64": "uint64", "C64": "complex64", "C128": "complex128",
                **REAL_FLOAT_DTYPES}


def safetensors_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name → (shape, safetensors dtype string) of every tensor in a .safetensors file, from its
    header alone (8-byte little-endian length, then JSON): no tensor data is read or mapped, so a
    header describing gigabytes costs nothing. Offsets are checked against the file size."""
    import struct

    size = regular_file(path).st_size
    bad = f"{path}: unreadable or truncated safetensors file"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise LoadError(f"{bad} (no header)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
                raise LoadError(f"{bad} (header length {n} in a {size}-byte file)")
            header = json.loads(f.read(n))
    except OSError as e:
        raise LoadError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    except (ValueError, RecursionError) as e:
        raise LoadError(f"{bad} (header is not JSON: {str(e)[:80]})") from None
    if not isinstance(header, dict):
        raise LoadError(f"{bad} (header is not a JSON object)")
    data_len = size - 8 - n
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            if not (isinstance(dtype, str) and isinstance(shape, list) and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (*shape, start, end))):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise LoadError(f"{bad} (malformed header entry for {name[:80]!r})") from None
        if dtype not in _DTYPE_SIZES:
            raise LoadError(f"{bad} ({name[:80]!r} has unknown dtype {dtype[:20]!r})")
        nbytes = _DTYPE_SIZES[dtype] * _numel(shape)
        if end > data_len or end - start != nbytes:
            raise LoadError(f"{bad} ({name[:80]!r}: offsets {start}..{end} do not hold shape {tuple(shape)} "
                            f"{dtype} in {data_len} data bytes)")
        out[name] = (tuple(shape), dtype)
    return out


def load_safetensors_file(path: Path) -> dict[str, torch.Tensor]:
    """safetensors' load_file, also for a path that is not UTF-8 (a directory named with byte 0xff:
    safetensors takes only str paths it can encode; the file is then read through its descriptor)."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        if not os.path.isdir("/proc/self/fd"):
            raise LoadError(f"{name.encode('utf-8', 'backslashreplace').decode()}: the path is not valid UTF-8, "
                            f"which the safetensors library cannot open") from None
        fd = os.open(path, os.O_RDONLY)
        try:
            return load_file(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    return load_file(name)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    regular_file(path)
    try:
        return load_safetensors_file(path)
    except FileNotFoundError:
        raise LoadError(f"{path}: file missing") from None
    except PermissionError:
        raise LoadError(f"{path}: permission denied") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise LoadError(f"{path}: unreadable or truncated safetensors file ({str(e).splitlines()[0]})") from None


def forward_bytes(arch: DDiTConfig) -> int:
    """A rough upper bound of the memory one batch-1 forward pass needs (float32): logits and their
    log-softmax, CPU attention scores for one block, the MLP activations."""
    L = arch.seq_len
    return 4 * (3 * L * arch.vocab_size + 2 * L * L * arch.n_heads + 4 * L * arch.mlp_ratio * arch.hidden_size
                + 16 * L * arch.hidden_size)


def check_declared(arch: DDiTConfig, shapes: dict, config_file: Path, weight_file: Path) -> None:
    """The native config's architecture fields against the shapes in the weight file's header, one
    field at a time, so the message names the field that is wrong (model.hidden_size …)."""
    import re

    def shape(name):
        value = shapes.get(name)
        return tuple(value) if value is not None and len(value) == 2 else None

    name = weight_file.name
    emb = shape("vocab_embed.embedding")
    if emb is not None:
        if emb[1] != arch.hidden_size:
            raise LoadError(f"{config_file}: model.hidden_size = {arch.hidden_size} but {name} has hidden size "
                            f"{emb[1]} (vocab_embed.embedding is {emb}; wrong shapes for this config)")
        if emb[0] != arch.vocab_size:
            raise LoadError(f"{config_file}: vocabulary mismatch: model.vocab_size = {arch.vocab_size} but "
                            f"vocab_embed.embedding in {name} has {emb[0]} rows")
    sig = shape("sigma_map.mlp.0.weight")
    if sig is not None and sig[0] != arch.cond_dim:
        raise LoadError(f"{config_file}: model.cond_dim = {arch.cond_dim} but {name} has conditioning size {sig[0]}")
    blocks = {int(m.group(1)) for k in shapes for m in [re.match(r"blocks\.(\d{1,9})\.", k)] if m}
    if len(blocks) != arch.n_blocks:
        raise LoadError(f"{config_file}: model.n_blocks = {arch.n_blocks} but {name} has {len(blocks)} "
                        f"transformer blocks")
    mlp0 = shape("blocks.0.mlp.0.weight")
    if mlp0 is not None and mlp0[0] != arch.mlp_ratio * arch.hidden_size:
        raise LoadError(f"{config_file}: model.mlp_ratio = {arch.mlp_ratio} but blocks.0.mlp.0.weight in {name} "
                        f"has {mlp0[0]} rows ({arch.mlp_ratio} × hidden size {arch.hidden_size} expected)")


VOCAB_WEIGHTS = ("vocab_embed.embedding", "output_layer.linear.weight", "output_layer.linear.bias")


def check_names(missing: list[str], unexpected: list[str], source: str) -> None:
    """A LoadError naming the first missing, else the first unexpected, weights (at most three)."""
    if missing:
        raise LoadError(f"{source}: missing weights {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
    if unexpected:
        raise LoadError(f"{source}: unexpected weights {', '.join(unexpected[:3])}{' …' if len(unexpected) > 3 else ''}")


def shape_error(source: str, name: str, got: tuple, want: tuple, vocab_size: int) -> LoadError:
    """The LoadError of a weight of the wrong shape; a vocabulary-sized weight says so."""
    hint = f" (vocabulary mismatch: config says {vocab_size})" if name in VOCAB_WEIGHTS else ""
    return LoadError(f"{source}: {name} has shape {got}, expected {want}{hint}")


def check_before_build(arch: DDiTConfig, shapes: dict, source: str, dtypes: dict | None = None,
                       to_load: int = 0) -> None:
    """Everything that can be checked before DDiT(arch) allocates: the config's own ranges, that the
    weights have exactly the tensors and shapes the config implies (so a 1 KB config cannot declare
    a model larger than its weight file), real floating-point dtypes, and that the model plus one
    batch-1 forward pass fit in the memory available.

    shapes: name → shape (a tuple, or a tensor); dtypes: name → dtype name, when known.
    to_load: bytes of weights still to be read.
    """
    try:
        arch.validate()
    except ValueError as e:
        raise LoadError(f"{source}: {e}") from None
    expected = arch.parameter_shapes()
    names = [k for k in shapes if k != "rotary_emb.inv_freq"]
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in names if k not in expected]
    check_names(missing, unexpected, source)
    for name, want in expected.items():
        got = shapes[name]
        got = tuple(got.shape) if isinstance(got, torch.Tensor) else tuple(got)
        if got != want:
            raise shape_error(source, name, got, want, arch.vocab_size)
        dtype = dtypes.get(name) if dtypes else (str(shapes[name].dtype).replace("torch.", "")
                                                  if isinstance(shapes[name], torch.Tensor) else None)
        if dtype is not None and dtype not in REAL_FLOAT_DTYPES and dtype not in REAL_FLOAT_DTYPES.values():
            raise LoadError(f"{source}: {name} has dtype {dtype}; DDiT weights must be real floating point")
    check_memory(4 * arch.num_parameters() + forward_bytes(arch) + to_load,
                 f"a DDiT of {arch.num_parameters():,} parameters with {arch.seq_len} tokens of "
                 f"{arch.vocab_size} classes" + (f" (plus {to_load / 2**30:.2f} GiB of weights to read)" if to_load
                                                 else ""), source)


def load_state_into(model: DDiT, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict by-name load with one clear line for missing keys, extra keys, wrong shapes, dtypes,
    NaNs. Copies tensor by tensor into the model (no second full copy of the weights)."""
    expected = {k: v for k, v in model.state_dict().items() if k != "rotary_emb.inv_freq"}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - {"rotary_emb.inv_freq"})
    check_names(missing, unexpected, source)
    for name, ref in expected.items():
        got = state[name]
        if not isinstance(got, torch.Tensor):
            raise LoadError(f"{source}: {name} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(ref.shape):
            raise shape_error(source, name, tuple(got.shape), tuple(ref.shape), model.config.vocab_size)
        if not got.is_floating_point():
            raise LoadError(f"{source}: {name} has dtype {str(got.dtype).replace('torch.', '')}; "
                            f"DDiT weights must be real floating point")
        if not torch.isfinite(got if got.element_size() > 1 else got.float()).all():  # float8: no isfinite kernel
            raise LoadError(f"{source}: {name} contains NaN or infinite values")
    with torch.no_grad():
        for name, ref in expected.items():
            ref.copy_(state[name])


def load_tokenizer(path: Path):
    """A tokenizer.json file, checked before the tokenizers library sees it (tokenizer_json.py)."""
    from .tokenizer_json import tokenizer_from_json

    data = read_limited(path, MAX_TOKENIZER_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LoadError(f"{path}: unreadable tokenizer (not UTF-8: {e})") from None
    del data
    return tokenizer_from_json(text, str(path))


def _tokenizer_file(path: Path, entry) -> Path | None:
    """The tokenizer file a native config names: `"tokenizer": {"file": "tokenizer.json"}` or null."""
    if entry is None or entry is False:
        return None
    if not isinstance(entry, dict):
        raise LoadError(f"{path / 'config.json'}: tokenizer must be a mapping like {{\"file\": \"tokenizer.json\"}} "
                        f"or null, found {type(entry).__name__} {entry!r:.60}")
    if not entry:
        return None
    name = entry.get("file", "tokenizer.json")
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise LoadError(f"{path / 'config.json'}: tokenizer.file must be a file name inside the checkpoint "
                        f"directory, found {name!r:.60}")
    return path / name


class NativeAdapter(Adapter):
    family = "memaudit"
    description = "memaudit's own directory: config.json (format=memaudit) + model.safetensors"

    def detect(self, path: Path) -> bool:
        if not path.is_dir() or not (path / "config.json").is_file():
            return False
        try:
            return read_config(path).get("format") == FORMAT
        except LoadError:
            # A broken config.json in a directory with our weight file name is still ours to report.
            return (path / "model.safetensors").exists()

    def load(self, path: Path, weights: str | None, trust_remote_code: bool) -> Denoiser:
        config = read_config(path)
        config_file = path / "config.json"
        if "model" not in config:
            raise LoadError(f"{config_file}: invalid model config (no 'model' entry)")
        missing = [k for k in ("n_heads", "seq_len") if isinstance(config["model"], dict) and k not in config["model"]]
        if missing:   # the two fields no weight shape can confirm: never a silent default
            raise LoadError(f"{config_file}: model.{missing[0]} is missing (memaudit cannot infer the "
                            f"{'head count' if missing[0] == 'n_heads' else 'sequence length'} from the weights)")
        try:
            arch = DDiTConfig.from_dict(config["model"], where="model")
            schedule = schedule_from_dict(config.get("schedule"), where="schedule")
        except (TypeError, ValueError) as e:
            raise LoadError(f"{config_file}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        tokenizer_file = _tokenizer_file(path, config.get("tokenizer"))
        ema_file = path / "ema.safetensors"
        if os.path.islink(ema_file) and not ema_file.exists() and weights != "raw":
            # Never fall back to the raw weights silently: the report would say "raw" but the user
            # (or the trainer) meant the EMA set to be there.
            raise LoadError(f"{ema_file}: ema.safetensors is a broken symlink (points to {os.readlink(ema_file)}); "
                            f"fix it or use --weights raw")
        has_ema = os.path.lexists(ema_file)
        if weights is None:
            weights = "ema" if has_ema else "raw"
        if weights == "ema" and not has_ema:
            raise LoadError(f"{path}: no EMA weights (ema.safetensors); use --weights raw")
        weight_file = path / ("ema.safetensors" if weights == "ema" else "model.safetensors")
        # Shapes from the safetensors header first: nothing is allocated for a config that declares
        # more than its weight file holds, or more than fits in memory.
        header = safetensors_header(weight_file)
        size = regular_file(weight_file).st_size
        check_declared(arch, {k: v[0] for k, v in header.items()}, config_file, weight_file)
        check_before_build(arch, {k: v[0] for k, v in header.items()}, str(weight_file),
                           dtypes={k: _TORCH_NAMES.get(v[1], v[1]) for k, v in header.items()}, to_load=size)
        try:
            model = DDiT(arch)
        except ValueError as e:
            raise LoadError(f"{config_file}: {e}") from None
        load_state_into(model, load_tensors(weight_file), str(weight_file))
        tokenizer, tokenizer_error = None, None
        if tokenizer_file is not None:
            # A declared tokenizer that is missing, unreadable or of another vocabulary fails the
            # load only when --tokenizer does not name one (tokenizer_sources.attach_tokenizer).
            try:
                tokenizer = load_tokenizer(tokenizer_file)
                tok_vocab = tokenizer.get_vocab_size()
                if tok_vocab != arch.vocab_size:
                    raise LoadError(f"{path}: vocabulary mismatch: tokenizer has {tok_vocab} tokens, "
                                    f"model has {arch.vocab_size}")
            except LoadError as e:
                tokenizer, tokenizer_error = None, str(e)
        provenance = {
            "checkpoint": str(path.resolve()),
            "files": {weight_file.name: file_sha256(weight_file),
                      "config.json": file_sha256(config_file)},
            "training_layout": "stream",   # memaudit's trainer cuts blocks from one token stream
        }
        if tokenizer_error is not None:
            provenance[DEFERRED_TOKENIZER_ERROR] = tokenizer_error
        return Denoiser(model=model, schedule=schedule, vocab_size=arch.vocab_size, seq_len=arch.seq_len,
                        tokenizer=tokenizer, family=self.family, weights=weights, time_input="sigma",
                        provenance=provenance, config=config)
