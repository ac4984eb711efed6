"""Checkpoint loaders behind one small interface, found through a registry of lazy entries.

Each checkpoint family is one module in this package with one Adapter class:

    class MyFamily(Adapter):
        family = "my-family"
        def detect(self, path: Path) -> bool: ...          # cheap: file names / config fields
        def load(self, path: Path, weights, trust_remote_code) -> Denoiser: ...

and one line in BUILTIN_ADAPTERS below ("family": "module:Class"); the module is imported the
first time detection reaches it. `memaudit.load()` resolves the path, asks each adapter in
detection order whether it recognises the checkpoint, and calls the first that does. The order:
BUILTIN_ADAPTERS (specific layouts first), then classes added with `register` (tests, embedding
code), then plugins: installed packages that declare an entry point in the `memaudit.adapters`
group (`my-family = "my_pkg.adapter:MyFamily"`), in name order.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..budget import memory_available
from ..denoiser import Denoiser


class LoadError(Exception):
    """The checkpoint could not be resolved or loaded, or is unsupported (CLI exit code 4)."""


class UnsupportedCheckpoint(LoadError):
    """The checkpoint was recognised but its family cannot be probed (e.g. masked diffusion)."""


class Adapter:
    family: str = ""
    description: str = ""
    # True for an adapter that runs the checkpoint's own code (only with trust_remote_code); its
    # load() also takes time_input and schedule, which no native family needs.
    runs_checkpoint_code: bool = False

    def detect(self, path: Path) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self, path: Path, weights: str | None, trust_remote_code: bool) -> Denoiser:  # pragma: no cover
        raise NotImplementedError


# The built-in families, in detection order (specific layouts first): family name → "module:Class".
BUILTIN_ADAPTERS: dict[str, str] = {
    "memaudit": "memaudit.adapters.native:NativeAdapter",
    "duo/udlm/uni-d2 .ckpt": "memaudit.adapters.lightning:LightningAdapter",
    "sedd (uniform graph)": "memaudit.adapters.sedd:SEDDAdapter",
    "diffusion_gemma": "memaudit.adapters.diffusion_gemma:DiffusionGemmaAdapter",
    "remote code (--trust-remote-code)": "memaudit.adapters.remote:RemoteCodeAdapter",
    "hf (udlm, duo, gidd dit)": "memaudit.adapters.hf:HFAdapter",
}
ENTRY_POINT_GROUP = "memaudit.adapters"


@dataclass
class Entry:
    """One family of the registry: its name, where its Adapter class lives ("module:Class"), the
    adapter once imported, and whether it came from an installed package's entry point."""

    family: str
    target: str
    adapter: Adapter | None = None
    plugin: bool = False

    def load(self) -> Adapter:
        if self.adapter is None:
            module, _, attr = self.target.partition(":")
            try:
                obj = importlib.import_module(module)
                for part in attr.split("."):
                    obj = getattr(obj, part)
                self.adapter = obj()
            except Exception as e:  # noqa: BLE001 - a broken plugin is named, not a traceback
                if not self.plugin:
                    raise
                first = str(e).splitlines()[0] if str(e) else ""
                raise LoadError(f"adapter plugin {self.family!r} ({self.target}) cannot be loaded: "
                                f"{type(e).__name__}: {first}") from None
        return self.adapter


class Registry:
    """Families in detection order; each adapter is imported the first time detection reaches it."""

    def __init__(self, table: dict[str, str]):
        self.entries = [Entry(family, target) for family, target in table.items()]
        self.plugins: list[Entry] | None = None  # read from the entry points when first needed

    def register(self, cls: type) -> type:
        """Add an Adapter class after the built-ins (before plugins); → the class (a decorator)."""
        self.entries.append(Entry(cls.family, f"{cls.__module__}:{cls.__qualname__}", cls()))
        return cls

    def discover_plugins(self) -> list[Entry]:
        """(Re)read the `memaudit.adapters` entry points of the installed packages."""
        import importlib.metadata  # only when detection gets past the built-ins

        known = {e.family for e in self.entries}
        found = sorted((ep.name, ep.value) for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        self.plugins = [Entry(name, value, plugin=True) for name, value in found if name not in known]
        return self.plugins

    def families(self) -> list[str]:
        return [e.family for e in self.entries + (self.plugins if self.plugins is not None else self.discover_plugins())]

    def __iter__(self) -> Iterator[Adapter]:
        for entry in self.entries:
            yield entry.load()
        for entry in self.plugins if self.plugins is not None else self.discover_plugins():
            yield entry.load()

    def load_all(self, plugins: bool = False) -> list[Adapter]:
        """Import the built-in and registered adapters now (and the plugins, if asked), e.g. while a
        CLI holds Ctrl-C during start-up."""
        return list(self) if plugins else [entry.load() for entry in self.entries]


REGISTRY = Registry(BUILTIN_ADAPTERS)


def register(cls: type) -> type:
    """Class decorator: add an Adapter to the registry, after the built-in families."""
    return REGISTRY.register(cls)


# Configs are small: a Lightning/Hydra/HF config is kilobytes. Tokenizer JSON can be tens of MB.
MAX_CONFIG_BYTES = 64 << 20
MAX_TOKENIZER_BYTES = 512 << 20

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def regular_file(path: str | Path, what: str = "") -> os.stat_result:
    """Check, without blocking, that `path` is a readable regular file; → its stat.

    Every file an adapter opens goes through here first: a FIFO opened for reading blocks forever
    waiting for a writer, a device can stream without end, a directory is not a file. Refusals are
    LoadErrors naming the file: `file missing`, `broken symlink`, `permission denied`,
    `not a regular file (a FIFO …)`.
    """
    path = Path(path)
    label = f"{path}{f' ({what})' if what else ''}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            raise LoadError(f"{label}: broken symlink (points to {target}, which does not exist)") from None
        raise LoadError(f"{label}: file missing") from None
    except PermissionError:
        raise LoadError(f"{label}: permission denied") from None
    except OSError as e:
        raise LoadError(f"{label}: cannot read ({e.strerror or type(e).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a plain file")
        raise LoadError(f"{label}: not a regular file ({kind})")
    try:  # permission check by opening; O_NONBLOCK so that a file swapped for a FIFO cannot block
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except PermissionError:
        raise LoadError(f"{label}: permission denied") from None
    except OSError as e:
        raise LoadError(f"{label}: cannot read ({e.strerror or type(e).__name__})") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise LoadError(f"{label}: not a regular file")
    return st


def read_limited(path: str | Path, limit: int = MAX_CONFIG_BYTES, what: str = "") -> bytes:
    """The bytes of a regular file no larger than `limit` (a LoadError otherwise)."""
    st = regular_file(path, what)
    if st.st_size > limit:
        raise LoadError(f"{path}: {st.st_size:,} bytes, more than the {limit >> 20} MiB memaudit reads "
                        f"for this kind of file")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except PermissionError:
        raise LoadError(f"{path}: permission denied") from None
    except OSError as e:
        raise LoadError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    if len(data) > limit:
        raise LoadError(f"{path}: more than the {limit >> 20} MiB memaudit reads for this kind of file")
    return data


def read_json(path: str | Path) -> dict:
    """A JSON object from a file of at most MAX_CONFIG_BYTES (read_limited); anything else is a LoadError."""
    try:
        data = json.loads(read_limited(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LoadError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise LoadError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise LoadError(f"{path}: expected a JSON object")
    return data


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    regular_file(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------- memory budget
def check_memory(nbytes: int, what: str, source: str) -> None:
    """LoadError, before anything is allocated, if `what` needs more memory than is available."""
    available = memory_available()
    if available is not None and nbytes > available:
        raise LoadError(f"{source}: {what} needs {nbytes / 2**30:.2f} GiB of memory, more than the "
                        f"{available / 2**30:.2f} GiB available; refusing to allocate it")


def resolve(path_or_id: str | Path, trust_remote_code: bool = False) -> Path:
    """A local path always wins; anything else is a LoadError naming what was looked for. A hub
    download fetches `*.py` files only with trust_remote_code."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        return path
    if os.path.islink(path):  # a dangling link is a local path gone wrong, not a hub id
        regular_file(path)
    from . import hub  # noqa: WPS433 - optional dependency, imported on demand
    return hub.resolve_hub_id(str(path_or_id), trust_remote_code)


def detect(path: Path) -> Adapter:
    if not path.is_dir():
        regular_file(path)  # a FIFO / device / socket is never a checkpoint; say so, do not block
    else:  # the files detection reads: refused here rather than silently skipped by is_file()
        for name in ("config.json", ".hydra/config.yaml"):
            if os.path.lexists(path / name):
                regular_file(path / name)
    for adapter in REGISTRY:
        try:
            if adapter.detect(path):
                return adapter
        except OSError as e:
            raise LoadError(f"cannot read {path}: {e}") from None
    families = ", ".join(REGISTRY.families())
    raise LoadError(f"{path}: not a recognised checkpoint (supported families: {families})")


def load(path_or_id: str | Path, weights: str | None = None, trust_remote_code: bool = False,
         device: str | None = None, tokenizer: str | None = None, time_input: str | None = None,
         schedule: str | None = None, max_memory: int | None = None) -> Denoiser:
    """Load any supported checkpoint as a Denoiser.

    weights: 'ema' (default where the checkpoint has EMA weights), 'raw', or None for the default.
    tokenizer: a tokenizer.json, a tokenizer folder or a hub name, instead of the one memaudit finds
    (adapters/tokenizer_sources.py). Never executes code from the checkpoint unless
    trust_remote_code=True; then a family memaudit does not load natively is loaded through its own
    modeling code, fed `time_input` ('sigma' | 't' | 'none') under `schedule` ('loglinear[:EPS]')
    where its config does not say. The provenance says which way it was loaded (`modeling_code`).
    max_memory: bytes the run may use; a family that estimates its memory before reading weights
    (`takes_memory_budget`) refuses a model that does not fit it (else the memory available).
    """
    from ..errors import UsageError
    from .tokenizer_sources import attach_tokenizer

    if weights not in (None, "ema", "raw"):
        raise ValueError(f"weights must be 'ema', 'raw' or None, not {weights!r}")
    if time_input not in (None, "sigma", "t", "none"):
        raise UsageError(f"--time-input must be sigma, t or none, not {time_input!r}")
    path = resolve(path_or_id, trust_remote_code)
    adapter = detect(path)
    if getattr(adapter, "runs_checkpoint_code", False):  # plugins need not subclass Adapter
        denoiser = adapter.load(path, weights, trust_remote_code, time_input=time_input, schedule=schedule)
    else:
        if time_input is not None or schedule is not None:
            raise UsageError(f"--time-input and --schedule apply only to a checkpoint loaded through its own "
                             f"modeling code; {path} is a {adapter.family} checkpoint, which memaudit loads natively "
                             f"and whose time input and schedule it reads itself")
        if getattr(adapter, "takes_memory_budget", False):
            denoiser = adapter.load(path, weights, trust_remote_code, max_memory=max_memory, device=device)
        else:
            denoiser = adapter.load(path, weights, trust_remote_code)
        denoiser.provenance.setdefault("modeling_code", "memaudit")
    denoiser.provenance["adapter"] = adapter.family
    attach_tokenizer(denoiser, path, tokenizer, trust_remote_code)
    if device is not None:
        denoiser.to(device)
    return denoiser


def as_denoiser(checkpoint_or_denoiser, weights: str | None = None, device: str | None = None,
                **load_options) -> Denoiser:
    """A Denoiser as given (moved to `device` when one is named), or `load` of a path / hub id with
    `load_options` (tokenizer, trust_remote_code, time_input, schedule): what scan() and recover()
    accept."""
    if isinstance(checkpoint_or_denoiser, Denoiser):
        if any(v not in (None, False) for k, v in load_options.items() if k != "max_memory"):
            raise ValueError("tokenizer / trust_remote_code / time_input / schedule apply to a checkpoint path "
                             "or hub id, not to a Denoiser already loaded")
        if device is not None:
            checkpoint_or_denoiser.to(device)
        return checkpoint_or_denoiser
    return load(checkpoint_or_denoiser, weights=weights, device=device, **load_options)
