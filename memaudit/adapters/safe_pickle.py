"""Read PyTorch / Lightning checkpoint files without executing anything they contain.

A `.ckpt` written by Lightning is a `torch.save` archive: a pickle (`data.pkl`) that names Python
callables, plus raw tensor storages. `torch.load(weights_only=False)` imports and calls whatever the
pickle names; this module never does. Its unpickler resolves every global the pickle mentions
through one policy:

* **allowed** — a short list of rebuild functions that memaudit implements itself (tensor rebuilds
  from storages, `OrderedDict`, `set`, bytes via `_codecs.encode`, `torch.Size`, dtypes …). These
  are the only callables ever called, and each checks its arguments.
* **inert** — everything else becomes an `Inert` record: a placeholder class created on the fly
  that remembers the global's dotted name, its constructor arguments and its pickled state as plain
  data. The named module is never imported, the named callable never called.
* **refused** — a pickle that *calls* (REDUCE / INST / OBJ) a global that is not a known, inert
  data class is refused with `UnsafePickle` naming the global ("the pickle calls posix.system").
  Instantiating a class through NEWOBJ never calls its `__init__`, so config and tokenizer objects
  (`omegaconf.*`, `transformers.*`, `tokenizers.*`, Lightning's `AttributeDict`, enum members …)
  are recorded, not refused.

`safe_load(path)` handles both the zip format (torch ≥ 1.6) and the legacy format. The zip
container is read with Python's `zipfile` (`TorchArchive`: member bounds checked before anything
is read) and tensors are built with public torch APIs only (`torch.UntypedStorage.from_file`,
`torch.frombuffer`, `Tensor.set_`); storages of the zip format are memory-mapped, so only the tensors
a caller touches are read from disk.
"""
from __future__ import annotations

import _compat_pickle  # CPython's table of Python 2 names, which pickle's fix_imports uses; no public API
import collections
import io
import pickle
import pickletools
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from . import LoadError, regular_file

# Bounds on what a pickle may make memaudit materialise (docs/formats.md, "Limits"):
MAX_PICKLE_BYTES = 64 << 20      # data.pkl of a Lightning checkpoint is kilobytes to a few MB
MAX_CONFIG_NODES = 250_000       # nodes visited when walking a config (a Hydra config has hundreds)
MAX_INTERPOLATIONS = 100_000     # ${...} substitutions when resolving a config (a config has dozens)
MAX_STRING_BYTES = 1 << 20       # one interpolated config string
VIEW_SLACK_BYTES = 1 << 20       # how much larger than its storage a tensor view may be (stride 0)
MAX_BUILT_BYTES = 256 << 20      # values built by the callables a pickle may call (BuildBudget)
MAX_REPR_NODES = 1_000_000       # elements visited to bound one str(container) a pickle calls


class NodeBudget:
    """Counts the nodes a walk over pickled or parsed data visits. Shared references let a small
    file describe a tree of 2^40 nodes (a list holding the same list twice, forty levels deep);
    walking it would never end. Past `limit` visits: a LoadError."""

    def __init__(self, limit: int = MAX_CONFIG_NODES, what: str = "config", message: str | None = None,
                 error: type = LoadError):
        self.limit, self.what, self.count, self.error = limit, what, 0, error
        self.message = message or (f"{what} has more than {limit:,} nodes (shared references repeated "
                                   f"level after level?); refusing to expand it")

    def visit(self, n: int = 1) -> None:
        self.count += n
        if self.count > self.limit:
            raise self.error(self.message)


class UnsafePickle(LoadError):
    """The checkpoint's pickle would execute code when loaded with torch.load."""


class UnsafeSize(LoadError):
    """The checkpoint's pickle would make memaudit allocate far more than the file holds."""


# --------------------------------------------------------------------------------- inert records
class Inert:
    """A record of an object a pickle describes; never the object itself.

    Subclasses are created per global name by `inert_class`. Instances keep, as plain data:
    `args` (constructor / NEWOBJ arguments), `state` (what BUILD passed), `items` (SETITEMS on a
    dict-like object) and `list_items` (APPENDS on a list-like object).
    """

    _memaudit_global = "?"
    _memaudit_refuse = False

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        d = obj.__dict__
        d["args"] = args
        d["kwargs"] = kwargs
        d["state"] = None
        d["items"] = {}
        d["list_items"] = []
        return obj

    def __init__(self, *args, **kwargs):
        # Reached only through REDUCE / INST / OBJ, i.e. when the pickle *calls* the global.
        if type(self)._memaudit_refuse:
            name = type(self)._memaudit_global
            if name.split(".")[0] == "torch":
                raise UnsafePickle(f"refusing to load: the pickle calls {name}, which memaudit does not "
                                   f"rebuild (only dense tensors, dicts, lists and plain data are read)")
            raise UnsafePickle(f"refusing to load: the pickle calls {name} "
                               f"(a checkpoint must not run code when it is loaded)")

    def __setstate__(self, state):
        self.__dict__["state"] = state

    def __setitem__(self, key, value):
        self.__dict__["items"][key] = value

    def append(self, value):
        self.__dict__["list_items"].append(value)

    def extend(self, values):
        self.__dict__["list_items"].extend(values)

    @property
    def global_name(self) -> str:
        return type(self)._memaudit_global

    def __repr__(self) -> str:
        return f"<inert {self.global_name}>"


_INERT_CLASSES: dict[tuple[str, bool], type] = {}


def inert_class(dotted: str, refuse: bool) -> type:
    key = (dotted, refuse)
    cls = _INERT_CLASSES.get(key)
    if cls is None:
        cls = type(f"Inert[{dotted}]", (Inert,), {"_memaudit_global": dotted, "_memaudit_refuse": refuse})
        _INERT_CLASSES[key] = cls
    return cls


def global_name(obj) -> str | None:
    """Dotted name of an Inert record or Inert class, else None."""
    if isinstance(obj, Inert):
        return obj.global_name
    if isinstance(obj, type) and issubclass(obj, Inert):
        return obj._memaudit_global
    return None


def _is_inert_class(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, Inert)


# ------------------------------------------------------------------------------- storages, tensors
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}


class StorageType:
    """What `torch.FloatStorage` & co. resolve to: only a dtype."""

    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"<storage type {self.name}>"


class Storage:
    """A storage from the archive: untyped bytes + the dtype the pickle declared."""

    def __init__(self, untyped: torch.UntypedStorage, dtype: torch.dtype):
        self.untyped, self.dtype = untyped, dtype


def _check_int_tuple(x, what: str) -> tuple:
    if isinstance(x, torch.Size):
        x = tuple(x)
    if not isinstance(x, (tuple, list)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in x):
        raise pickle.UnpicklingError(f"malformed tensor {what}")
    return tuple(x)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, Storage):
        raise pickle.UnpicklingError("tensor rebuild without a storage from this archive")
    if not isinstance(storage_offset, int):
        raise pickle.UnpicklingError("malformed tensor offset")
    size = _check_int_tuple(size, "size")
    stride = _check_int_tuple(stride, "stride")
    if len(size) != len(stride) or storage_offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError("malformed tensor geometry")
    t = torch.empty((0,), dtype=storage.dtype, device=storage.untyped.device)  # meta: _load_legacy's first pass
    numel = 1
    for n in size:
        numel *= n
    nbytes = storage.untyped.nbytes()
    if numel * t.element_size() > nbytes + VIEW_SLACK_BYTES:
        # A stride-0 (or overlapping) view larger than the bytes stored: any copy of it (a dtype cast,
        # a finiteness check, loading it into the model) would allocate size × element size bytes.
        raise UnsafeSize(f"a tensor of shape {tuple(size)} ({numel * t.element_size():,} bytes) is a view of a "
                         f"{nbytes:,}-byte storage (stride {tuple(stride)}); memaudit refuses tensors larger "
                         f"than their stored data")
    try:
        return t.set_(storage.untyped, storage_offset, size, stride)
    except RuntimeError as e:  # geometry outside the storage: truncated or corrupt archive
        raise pickle.UnpicklingError(f"tensor data out of bounds ({str(e).splitlines()[0]})") from None


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    if not isinstance(dtype, torch.dtype):
        raise pickle.UnpicklingError("malformed tensor dtype")
    t = _rebuild_tensor(storage, storage_offset, size, stride)
    return t.view(dtype) if t.dtype != dtype else t


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_state):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter rebuild without a tensor")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    # Tensor subclasses (nn.Parameter) pickle as (rebuild function, subclass, args, state). Only our
    # own rebuild functions may be called; the result stays a plain tensor.
    if func not in (_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter, _rebuild_tensor):
        name = global_name(func) or type(func).__name__
        raise UnsafePickle(f"refusing to load: the pickle calls {name} through torch._tensor._rebuild_from_type_v2")
    if not isinstance(args, tuple):
        raise pickle.UnpicklingError("malformed tensor subclass rebuild")
    return func(*args)


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # How protocol-2 pickles store bytes: _codecs.encode(str, 'latin1').
    if isinstance(obj, str) and isinstance(encoding, str) and encoding.lower().replace("-", "") in ("latin1", "iso88591"):
        return obj.encode("latin1")
    raise UnsafePickle("refusing to load: the pickle calls _codecs.encode with unexpected arguments")


def _defaultdict(*args):
    return {}  # the default factory is never kept (or called); SETITEMS fills it like a dict


def _ordered_dict(*args):
    if any(isinstance(a, (torch.Tensor, Storage, Inert)) for a in args):
        raise UnsafePickle("refusing to load: the pickle calls collections.OrderedDict on a tensor or record")
    return collections.OrderedDict(*args)


def _torch_size(*args):
    if len(args) != 1:
        raise pickle.UnpicklingError("malformed torch.Size")
    return torch.Size(_check_int_tuple(args[0], "size"))


def _torch_device(*args):
    if not all(isinstance(a, (str, int)) for a in args) or not 1 <= len(args) <= 2:
        raise pickle.UnpicklingError("malformed torch.device")
    return torch.device(*args)


def _reconstructor(cls, base, state):
    # copyreg._reconstructor (protocol 0/1 objects): record the class, call nothing.
    if not _is_inert_class(cls):
        raise UnsafePickle("refusing to load: the pickle calls copyreg._reconstructor on a non-data class")
    if cls._memaudit_refuse:   # subprocess.Popen, os.* …: only data classes may be instantiated this way
        raise UnsafePickle(f"refusing to load: the pickle calls copyreg._reconstructor on {cls._memaudit_global} "
                           f"(not a data class)")
    obj = cls.__new__(cls)
    obj.__dict__["args"] = (state,) if state is not None else ()
    return obj


def _getattr(obj, name, *default):
    # Python ≥ 3.12 pickles some enum members as getattr(EnumClass, 'NAME'): record, never look up.
    if _is_inert_class(obj) and not obj._memaudit_refuse and isinstance(name, str):
        member = inert_class(f"{obj._memaudit_global}.{name}", refuse=False)
        return member.__new__(member, name)
    target = global_name(obj) or type(obj).__name__
    raise UnsafePickle(f"refusing to load: the pickle calls builtins.getattr on {target}")


def _getitem(obj, key):
    # typing generics pickle as operator.getitem(typing.Dict, (str, Any)): record, never index.
    if _is_inert_class(obj) and not obj._memaudit_refuse:
        rec = inert_class(f"{obj._memaudit_global}[...]", refuse=False)
        return rec.__new__(rec, key)
    target = global_name(obj) or type(obj).__name__
    raise UnsafePickle(f"refusing to load: the pickle calls operator.getitem on {target}")


class BuildBudget:
    """Counts the bytes of every value the allowed callables build while one pickle is unpickled.

    Opcodes alone cannot make a pickle larger than its own bytes (memo entries are references, not
    copies), but the builtins a pickle may call can: `list(s)` turns a string of n characters into
    n objects, `str(container)` writes out a container as often as it holds the same memoized
    element, and rounds of `list(str(list(str(…))))` on memoized values grow fivefold each: 1 KB of
    pickle describes gigabytes. Every call's result is estimated *before* it is built, from its
    arguments, and charged here; past `limit` bytes in total the pickle is refused (UnsafeSize)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def charge(self, nbytes: int, what: str) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise UnsafeSize(f"the pickle builds more than {self.limit >> 20} MiB of values through "
                             f"{what} (a small pickle describing a huge object); refusing to build it")


def _repr_bound(x, nodes: NodeBudget) -> int:
    """An upper bound on the bytes of repr(x) (and of str(x) for a container), found without
    building it: every element is visited as often as repr would visit it (shared references
    count each time), at most MAX_REPR_NODES visits."""
    nodes.visit()
    if isinstance(x, str):
        # escapes are up to 10 characters per code point, a UCS-4 string 4 bytes per character
        return 16 + (len(x) + 2) * (1 if x.isascii() and x.isprintable() else 40)
    if isinstance(x, (bytes, bytearray)):
        return 16 + 4 * len(x) + 14
    if isinstance(x, int) and not isinstance(x, bool):
        return 16 + x.bit_length() // 3 + 2   # (decimal digits ≤ bits·log10 2 + 1)
    if isinstance(x, (list, tuple, set, frozenset)):
        return 16 + 2 * len(x) + 16 + sum(_repr_bound(v, nodes) for v in x)
    if isinstance(x, dict):
        return 16 + 4 * len(x) + sum(_repr_bound(k, nodes) + _repr_bound(v, nodes) for k, v in x.items())
    return 64   # None, bools, floats, complex, slices, records (their repr is their name)


def _build_cost(fn, args) -> int:
    """Bytes the result of fn(*args) may take, estimated from the arguments without calling fn."""
    if not args:
        return 64
    a = args[0]
    if fn is str:
        if isinstance(a, str):
            return 0 if len(args) == 1 else 40 * len(a)
        if isinstance(a, (bytes, bytearray)) and len(args) > 1:   # str(b, encoding): a decode
            return 64 + 4 * len(a)
        return 2 * _repr_bound(a, NodeBudget(MAX_REPR_NODES, message=(
            f"the pickle calls builtins.str on a container of more than {MAX_REPR_NODES:,} elements "
            f"(shared references repeated level after level?); refusing to build it"), error=UnsafeSize))
    if fn in (bytes, bytearray):
        return 64 + (4 * len(a) if isinstance(a, str) else len(a) if isinstance(a, (bytes, bytearray)) else 0)
    if fn in (int, float, complex, bool, slice):
        return 64 + (len(a) if isinstance(a, (str, bytes, bytearray)) else 0)
    try:
        n = len(a)
    except TypeError:
        return 64
    per = 8                                # a pointer per element of a list / tuple
    if isinstance(a, str) and not a.isascii():
        per += 80                          # each non-Latin-1 character becomes its own object
    if fn in (set, frozenset, dict):
        per += 64                          # hash table slots (and a pair per dict entry)
    return 64 + per * n


def _safe_builtin(fn):
    def call(*args):
        for a in args:
            if isinstance(a, (Inert, Storage, torch.Tensor, StorageType)) or _is_inert_class(a):
                # bytearray(tensor) / list(tensor) would materialise the tensor's full logical size
                raise UnsafePickle(f"refusing to load: the pickle calls builtins.{fn.__name__} on a "
                                   f"{global_name(a) or type(a).__name__}")
        if fn in (bytes, bytearray) and args and not isinstance(args[0], (str, bytes, bytearray)):
            raise UnsafePickle(f"refusing to load: the pickle calls builtins.{fn.__name__} with a "
                               f"{type(args[0]).__name__} (a size or an iterable), not with bytes")
        return fn(*args)
    call.__name__ = fn.__name__
    call.builds = fn   # what _Unpickler.find_class meters
    return call


def _metered(fn, budget: BuildBudget, what: str):
    """fn, with the size of each result it would build charged to `budget` before it is built."""
    inner = getattr(fn, "builds", None)

    def call(*args):
        if inner is not None:
            cost = _build_cost(inner, args)
        else:   # _codecs.encode(str, 'latin1') and OrderedDict(pairs): one copy of the argument
            cost = 64 + sum(len(a) * (8 if isinstance(a, (list, tuple)) else 1) for a in args
                            if isinstance(a, (str, bytes, bytearray, list, tuple)))
        budget.charge(cost, what)
        return fn(*args)

    return call


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("collections", "OrderedDict"): _ordered_dict,
    ("collections", "defaultdict"): _defaultdict,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "getattr"): _getattr,
    ("operator", "getitem"): _getitem,
    ("_operator", "getitem"): _getitem,
}
for _fn in (set, frozenset, tuple, list, dict, complex, slice, int, float, str, bool, bytes, bytearray):
    _ALLOWED[("builtins", _fn.__name__)] = _safe_builtin(_fn)
# The allowed callables that build values whose size their arguments decide (BuildBudget).
_METERED = {key for key in _ALLOWED if key[0] == "builtins"} | {("_codecs", "encode"), ("collections", "OrderedDict")}

# Namespaces whose *classes* are plain data holders in checkpoints (configs, tokenizers, enums,
# Lightning containers). Calling such a class is recorded, not executed. Functions (lower-case
# names) in these namespaces are refused unless listed in _INERT_CALLABLES.
_DATA_NAMESPACES = (
    "omegaconf", "transformers", "tokenizers", "lightning", "pytorch_lightning", "lightning_fabric",
    "lightning_utilities", "typing", "enum", "pathlib", "collections", "numpy", "datetime", "argparse",
    "decimal", "fractions", "uuid", "hydra",
)
_INERT_CALLABLES = {
    "functools.partial", "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype", "numpy.ndarray",
    "numpy.random._pickle.__randomstate_ctor", "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor", "builtins.object", "datetime.datetime", "datetime.date",
    "datetime.time", "datetime.timedelta", "datetime.timezone", "collections.deque", "collections.Counter",
    "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.Path", "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
}


def _policy(module: str, name: str):
    """→ a real callable (allowed), or an Inert class (recorded; refuse=True if calling it is unsafe)."""
    if (module, name) in _ALLOWED:
        return _ALLOWED[(module, name)]
    dotted = f"{module}.{name}"
    if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
        return StorageType(name, _STORAGE_DTYPES[name])
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if dotted in _INERT_CALLABLES:
        return inert_class(dotted, refuse=False)
    root = module.split(".")[0]
    if root in _DATA_NAMESPACES and name[:1].isupper() and "." not in name:
        return inert_class(dotted, refuse=False)
    # Anything else (functions anywhere, classes outside the data namespaces, torch internals that
    # memaudit does not implement): naming it is harmless, calling it is refused.
    return inert_class(dotted, refuse=True)


def _map_py2_name(module: str, name: str, proto: int) -> tuple[str, str]:
    if proto < 3:  # pickle's own fix_imports mapping, names only, nothing imported
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
    return module, name


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, persistent_load, budget: BuildBudget | None = None):
        super().__init__(file, fix_imports=False, encoding="utf-8")
        self._persistent = persistent_load
        self._proto = 2
        self._budget = budget if budget is not None else BuildBudget(MAX_BUILT_BYTES)

    def find_class(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise pickle.UnpicklingError("malformed global")
        module, name = _map_py2_name(module, name, self._proto)
        if (module, name) in _METERED:
            return _metered(_ALLOWED[(module, name)], self._budget, f"{module}.{name}")
        return _policy(module, name)

    def persistent_load(self, pid):
        return self._persistent(pid)


def run_unpickler(data: bytes | io.BufferedReader, persistent_load, budget: BuildBudget | None = None) -> Any:
    """Unpickle `data` (bytes or an open file) with the restricted policy; persistent_load(pid)
    turns a storage id into a Storage. The memo indices are checked first; the values built by
    the callables the pickle calls are charged to `budget` (a fresh MAX_BUILT_BYTES one if None)."""
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    _check_memo_indices(f)
    return _Unpickler(f, persistent_load, budget).load()


def _check_memo_indices(f) -> None:
    """Refuse memo indices no pickler writes. The C unpickler grows its memo array to the largest
    index it sees (`LONG_BINPUT 0xfffffff0` → a 32 GiB array, zero-filled: the process is killed
    before pickle can fail). A pickler numbers memo entries 0, 1, 2 …, each PUT one opcode, so an
    index is never above the number of opcodes read so far. Reads the pickle once with pickletools
    (no object is built), then rewinds."""
    start = f.tell()
    try:
        for count, (op, arg, _pos) in enumerate(pickletools.genops(f)):
            if op.name in ("PUT", "LONG_BINPUT") and isinstance(arg, int) and arg > count:
                raise UnsafeSize(f"the pickle stores memo entry {arg:,} after only {count:,} opcodes "
                                 f"(that would allocate a memo of {arg * 8:,} bytes)")
    except UnsafeSize:
        raise
    except Exception:  # noqa: BLE001 - malformed opcodes: let the unpickler report them
        pass
    finally:
        f.seek(start)


# --------------------------------------------------------------------------------------- loaders
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _pid_parts(pid, legacy: bool):
    if not isinstance(pid, tuple) or not pid:
        raise pickle.UnpicklingError("malformed persistent id")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind == "module" and legacy:
        return "module", None
    if kind != "storage" or len(pid) < 5:
        raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
    storage_type, key, _location, numel = pid[1:5]
    view = pid[5] if len(pid) > 5 else None
    if isinstance(storage_type, StorageType):
        dtype = storage_type.dtype
    elif isinstance(storage_type, torch.dtype):
        dtype = storage_type
    else:
        raise pickle.UnpicklingError(f"unsupported storage type {global_name(storage_type) or storage_type!r}")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise pickle.UnpicklingError("malformed storage id")
    return key, (dtype, numel, view)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def check_zip_members(path: Path, infos: list[zipfile.ZipInfo] | None = None) -> None:
    """Refuse a torch zip archive that could not have been written by torch.save before reading any
    of it: torch stores every member uncompressed, so a compressed member (a zip bomb: 1.5 MB that
    inflates to gigabytes) or members claiming more bytes than the archive holds are refused, and
    data.pkl may not exceed MAX_PICKLE_BYTES. Not a zip archive: nothing to check. `infos`: the
    archive's central directory when the caller has already read it."""
    if infos is None:
        if not zipfile.is_zipfile(path):
            return
        try:
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise LoadError(f"{path}: truncated or corrupt zip archive ({e})") from None
    size = path.stat().st_size
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise UnsafeSize(f"{path}: archive member {info.filename!r:.80} is compressed "
                             f"(torch.save stores members uncompressed); refusing to inflate it")
        if info.file_size != info.compress_size or info.file_size > size:
            raise UnsafeSize(f"{path}: archive member {info.filename!r:.80} claims {info.file_size:,} bytes "
                             f"in a {size:,}-byte file")
        total += info.file_size
        if (info.filename == "data.pkl" or info.filename.endswith("/data.pkl")) and info.file_size > MAX_PICKLE_BYTES:
            raise UnsafeSize(f"{path}: data.pkl is {info.file_size:,} bytes, more than the "
                             f"{MAX_PICKLE_BYTES >> 20} MiB memaudit unpickles")
    if total > size:
        raise UnsafeSize(f"{path}: archive members claim {total:,} bytes in a {size:,}-byte file")


def check_tensor_geometry(state: Any, source: str) -> None:
    """Every tensor in a state dict (or list) must fit in its storage: a stride-0 view of a few bytes
    with a huge shape is refused before anything copies it (torch.load's own unpickler does not check)."""
    tensors = state.values() if isinstance(state, dict) else state
    for name, t in zip(state.keys() if isinstance(state, dict) else range(len(tensors)), tensors):
        if not isinstance(t, torch.Tensor):
            continue
        logical = t.numel() * t.element_size()
        stored = t.untyped_storage().nbytes()
        if logical > stored + VIEW_SLACK_BYTES:
            raise UnsafeSize(f"{source}: tensor {name} of shape {tuple(t.shape)} ({logical:,} bytes) is a view "
                             f"of {stored:,} stored bytes (stride {tuple(t.stride())}); memaudit refuses tensors "
                             f"larger than their stored data")


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local file header (APPNOTE 4.3.7)


class TorchArchive:
    """A torch.save zip archive, read with `zipfile`: every member lives in one folder
    `<name>/` — `data.pkl` (the pickle), `data/<key>` (one storage's raw bytes), `byteorder`,
    `version` (or `.data/version`). Members are stored uncompressed, so a storage is a byte range
    of the file, memory-mapped (torch.UntypedStorage.from_file) and sliced without being read.
    The member bounds (check_zip_members) are checked when the archive is opened, before anything
    is read."""

    def __init__(self, path: Path):
        self.path, self.size = path, path.stat().st_size
        try:
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
                check_zip_members(path, infos)
                if not infos or "/" not in infos[0].filename:
                    raise LoadError(f"{path}: not a PyTorch checkpoint archive (its members are not in one folder)")
                self.prefix = infos[0].filename.split("/", 1)[0] + "/"
                self.members = {i.filename[len(self.prefix):]: i for i in infos if i.filename.startswith(self.prefix)}
                records = {name: z.read(self.members[name]) for name in
                           ("data.pkl", "byteorder", "version", ".data/version") if name in self.members}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise LoadError(f"{path}: unreadable or truncated PyTorch archive ({first})") from None
        if "data.pkl" not in records:
            raise LoadError(f"{path}: not a PyTorch checkpoint archive (no data.pkl record)")
        version = records.get(".data/version", records.get("version"))
        try:
            if version is None or int(version.decode("ascii").strip()) < 1:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise LoadError(f"{path}: not a PyTorch checkpoint archive (no valid version record: "
                            f"{version!r:.40})") from None
        self.data_pkl = records["data.pkl"]
        self.byteorder = records["byteorder"].decode("ascii", "replace") if "byteorder" in records else "little"
        if self.byteorder not in ("little", "big"):
            raise LoadError(f"{path}: unknown byte order {self.byteorder!r:.40}")
        self._mapped: torch.UntypedStorage | None = None

    def storage_range(self, key: str, nbytes: int) -> int:
        """The file offset of storage `key`'s first byte, after checking that the member exists and
        holds `nbytes` bytes inside the file. UnpicklingError otherwise."""
        info = self.members.get(f"data/{key}")
        if info is None:
            raise pickle.UnpicklingError(f"storage {key} missing from the archive")
        if info.file_size < nbytes:
            raise pickle.UnpicklingError(f"storage {key} is truncated ({info.file_size} < {nbytes} bytes)")
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            header = f.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise pickle.UnpicklingError(f"storage {key}: no zip member header at offset {info.header_offset}")
        fields = _LOCAL_HEADER.unpack(header)
        offset = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]  # + name + extra field
        if offset + nbytes > self.size:
            raise pickle.UnpicklingError(f"storage {key} runs past the end of the file")
        return offset

    def storage(self, key: str, nbytes: int) -> torch.UntypedStorage:
        """Storage `key` as untyped bytes in the archive's own byte order: a slice of the mapped file."""
        offset = self.storage_range(key, nbytes)
        if self._mapped is None:
            self._mapped = torch.UntypedStorage.from_file(str(self.path), shared=False, nbytes=self.size)
        return self._mapped[offset: offset + nbytes]

    def storage_bytes(self, key: str, nbytes: int) -> bytes:
        """Storage `key`'s bytes, read (not mapped): for the byte swap of big-endian archives."""
        offset = self.storage_range(key, nbytes)
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(nbytes)
        if len(data) != nbytes:
            raise pickle.UnpicklingError(f"storage {key} is truncated")
        return data


def _load_zip(path: Path) -> Any:
    archive = TorchArchive(path)
    storages: dict[str, Storage] = {}
    swapped_bytes = [0]

    def persistent_load(pid):
        key, (dtype, numel, _view) = _pid_parts(pid, legacy=False)
        if key in storages:
            return storages[key]
        elsize = _element_size(dtype)
        nbytes = numel * elsize
        if archive.byteorder == "big" and elsize > 1:
            raw = archive.storage_bytes(key, nbytes)  # bounded: the member lies inside the file
            swapped_bytes[0] += nbytes
            if swapped_bytes[0] > archive.size:  # records pointing at the same bytes, copied again and again
                raise UnsafeSize(f"storages to byte-swap total more than the {archive.size:,}-byte file")
            swapped = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, elsize).flip(1)
            untyped = swapped.contiguous().untyped_storage()
        else:
            untyped = archive.storage(key, nbytes)
        storages[key] = Storage(untyped, dtype)
        return storages[key]

    return run_unpickler(archive.data_pkl, persistent_load)


def _load_legacy(path: Path) -> Any:
    """A legacy (pre-zip) torch file: five pickles (magic number, protocol version, system info,
    the object, the storage keys), then each storage as an 8-byte element count and its bytes.

    Nothing is allocated from what the file declares: the pickles are read from the file's first
    MAX_PICKLE_BYTES only (a pickle opcode claiming gigabytes fails on the short buffer instead of
    reading them), every storage's extent is checked against the file's size, and the object is
    unpickled twice — once with storages on the `meta` device (no memory) to learn their sizes and
    order, once with each storage a slice of the memory-mapped file. A sparse file of gigabytes
    therefore costs nothing until a tensor is read (big-endian files, which must be byte-swapped in
    memory, may not declare more storage bytes than the blocks the file really occupies)."""
    stat = path.stat()
    file_size = stat.st_size
    with open(path, "rb") as f:
        head = f.read(min(file_size, MAX_PICKLE_BYTES))
    bio = io.BytesIO(head)

    def no_storage(pid):
        raise pickle.UnpicklingError("unexpected storage reference")

    def corrupt(what: str, e: BaseException | str):
        if file_size > len(head) and bio.tell() >= len(head) - 16:
            return UnsafeSize(f"the pickles of this legacy PyTorch file are larger than the "
                              f"{MAX_PICKLE_BYTES >> 20} MiB memaudit unpickles")
        return LoadError(f"{path}: corrupt legacy PyTorch file ({what}: {e})")

    def small(what):
        try:
            return run_unpickler(bio, no_storage)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise corrupt(what, e) from None

    if small("magic number") != LEGACY_MAGIC:
        raise LoadError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    if small("protocol version") != 1001:
        raise LoadError(f"{path}: unsupported legacy PyTorch protocol version")
    sys_info = small("system info")
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    main_start = bio.tell()
    declared: dict[str, tuple[torch.dtype, int]] = {}
    total = [0]

    def placeholder(pid):   # pass 1: sizes and dtypes only, storages on the meta device
        key, info = _pid_parts(pid, legacy=True)
        if key == "module":
            module_record = inert_class("legacy.module", refuse=False)
            return module_record.__new__(module_record)
        dtype, numel, view = info
        if view is not None:
            raise pickle.UnpicklingError("legacy storage views are not supported")
        if key not in declared:
            nbytes = numel * _element_size(dtype)
            total[0] += nbytes
            if nbytes > file_size:
                raise pickle.UnpicklingError(f"storage {key} larger than the file")
            if total[0] > file_size:  # each storage's bytes follow the pickle in the file
                raise UnsafeSize(f"storages declared by the pickle total more than the {file_size:,}-byte "
                                 f"file holds")
            declared[key] = (dtype, numel)
        dtype, numel = declared[key]
        return Storage(torch.UntypedStorage(numel * _element_size(dtype), device="meta"), dtype)

    try:
        run_unpickler(bio, placeholder)
    except (pickle.UnpicklingError, EOFError) as e:
        raise corrupt("object", e) from None
    keys = small("storage keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise LoadError(f"{path}: corrupt legacy PyTorch file (storage keys)")
    offsets: dict[str, int] = {}
    offset = bio.tell()
    with open(path, "rb") as f:
        for key in keys:
            if key not in declared or key in offsets:
                raise LoadError(f"{path}: corrupt legacy PyTorch file (unknown storage {key:.40})")
            dtype, numel = declared[key]
            f.seek(offset)
            header = f.read(8)
            if len(header) != 8:
                raise LoadError(f"{path}: truncated legacy PyTorch file")
            if struct.unpack("<q" if little else ">q", header)[0] != numel:
                raise LoadError(f"{path}: corrupt legacy PyTorch file (storage {key:.40} size)")
            offsets[key] = offset + 8
            offset += 8 + numel * _element_size(dtype)
            if offset > file_size:
                raise LoadError(f"{path}: truncated legacy PyTorch file")
    if set(offsets) != set(declared):
        raise LoadError(f"{path}: corrupt legacy PyTorch file (storages without data)")
    swap = not little and any(_element_size(d) > 1 for d, _ in declared.values())
    occupied = getattr(stat, "st_blocks", 0) * 512 or file_size
    if swap and total[0] > occupied:
        raise UnsafeSize(f"the big-endian storages ({total[0]:,} bytes) are larger than the {occupied:,} bytes the "
                         f"file occupies on disk (a sparse file); refusing to read them into memory")
    mapped = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=file_size) if declared else None
    storages: dict[str, Storage] = {}

    def mapped_storage(pid):   # pass 2: slices of the mapped file
        key, info = _pid_parts(pid, legacy=True)
        if key == "module":
            module_record = inert_class("legacy.module", refuse=False)
            return module_record.__new__(module_record)
        if key not in storages:
            dtype, numel = declared[key]
            nbytes = numel * _element_size(dtype)
            untyped = mapped[offsets[key]: offsets[key] + nbytes]
            if not little and _element_size(dtype) > 1:
                flipped = torch.empty(0, dtype=torch.uint8).set_(untyped).view(-1, _element_size(dtype)).flip(1)
                untyped = flipped.contiguous().untyped_storage()
            storages[key] = Storage(untyped, dtype)
        return storages[key]

    bio.seek(main_start)
    return run_unpickler(bio, mapped_storage)


def safe_load(path: str | Path) -> Any:
    """Unpickle a torch.save / Lightning file with the restricted policy above.

    Tensors come back as CPU tensors (zip format: memory-mapped, read on first use); every object
    that is not a tensor or plain container comes back as an `Inert` record. Raises `UnsafePickle`
    when the pickle would call code, `LoadError` for anything unreadable — always one line.
    """
    path = Path(path)
    regular_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise LoadError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        if head.startswith(b"PK"):
            if not zipfile.is_zipfile(path):
                raise LoadError(f"{path}: truncated or corrupt zip archive")
            return _load_zip(path)
        if head.startswith(b"\x80\x02\x8a\x0a"):
            return _load_legacy(path)
    except UnsafePickle as e:
        raise UnsafePickle(f"{path}: {e}") from None
    except UnsafeSize as e:
        raise UnsafeSize(e.args[0] if str(e).startswith(str(path)) else f"{path}: {e}") from None
    except LoadError:
        raise
    except RecursionError:
        raise LoadError(f"{path}: pickle nested too deeply") from None
    except MemoryError:
        raise LoadError(f"{path}: pickle needs too much memory") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LoadError(f"{path}: corrupt or truncated checkpoint ({msg})") from None
    raise LoadError(f"{path}: not a PyTorch checkpoint (neither a torch zip archive nor a legacy torch file)")


# ------------------------------------------------------------------------------ plain-data views
_OMEGA_CONTAINERS = ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig")


def to_plain(obj: Any, _depth: int = 0, _budget: NodeBudget | None = None) -> Any:
    """Inert config objects → plain dicts / lists / scalars (OmegaConf DictConfig/ListConfig and
    value nodes, Lightning AttributeDict, argparse Namespace); tensors and other records unchanged.
    At most MAX_CONFIG_NODES nodes are visited (LoadError beyond: see NodeBudget)."""
    if _depth > 200:
        raise LoadError("config nested too deeply")
    budget = _budget if _budget is not None else NodeBudget(MAX_CONFIG_NODES, "config")
    budget.visit()
    d = _depth + 1

    def rec(o):  # the recursion shares one budget
        return to_plain(o, d, budget)

    def key(k):
        k = rec(k)
        try:
            hash(k)
        except TypeError:
            raise LoadError(f"config has a {type(k).__name__} as a mapping key") from None
        return k

    if isinstance(obj, Inert):
        name = obj.global_name
        state = obj.state if isinstance(obj.state, dict) else {}
        if name in _OMEGA_CONTAINERS or name.endswith(".DictConfig") or name.endswith(".ListConfig"):
            content = state.get("_content")
            if isinstance(content, dict):
                return {key(k): rec(v) for k, v in content.items()}
            if isinstance(content, (list, tuple)):
                return [rec(v) for v in content]
            return content  # None, "???" or an unresolved "${...}" string
        if name.startswith("omegaconf.nodes.") or name.startswith("omegaconf.") and "_val" in state:
            return rec(state.get("_val"))
        if obj.items or name.endswith("AttributeDict"):
            out = {key(k): rec(v) for k, v in obj.items.items()}
            for k, v in state.items():
                out.setdefault(k, rec(v))
            return out
        if name == "argparse.Namespace":
            return {k: rec(v) for k, v in state.items()}
        if obj.list_items and not state:
            return [rec(v) for v in obj.list_items]
        if name.startswith("enum.") or name.split(".")[-1][:1].isupper() and len(obj.args) == 1 and not state:
            # enum member or simple value wrapper: keep the value
            return rec(obj.args[0]) if obj.args else name
        return obj
    if isinstance(obj, dict):
        return {key(k) if isinstance(k, Inert) else k: rec(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(rec(v) for v in obj) if isinstance(obj, list) else tuple(rec(v) for v in obj)
    return obj


def resolve_interpolations(cfg: Any) -> Any:
    """Resolve plain OmegaConf node interpolations (`${a.b}`, relative `${.x}`) in a plain config.

    Resolver calls (`${eval:...}`, `${cwd:}` …) are left as strings: they are code, never run.
    """
    import re

    pattern = re.compile(r"\$\{([^${}:]+)\}")
    budget = NodeBudget(MAX_CONFIG_NODES, "config")
    substitutions = NodeBudget(MAX_INTERPOLATIONS, message=(
        f"config interpolations need more than {MAX_INTERPOLATIONS:,} substitutions (values that refer to "
        f"other values again and again?); refusing to expand them"))

    def lookup(path: list, ref: str):
        if ref.startswith("."):
            up = len(ref) - len(ref.lstrip("."))  # one dot: the containing node, two: its parent …
            base = path[: max(0, len(path) - (up - 1))]
            parts = base + ref.lstrip(".").split(".")
        else:
            parts = ref.split(".")
        node = cfg
        for p in parts:
            if isinstance(node, dict) and p in node:
                node = node[p]
            elif isinstance(node, list) and p.isdigit() and int(p) < len(node):
                node = node[int(p)]
            else:
                return None, False
        return node, True

    def resolve_value(value, path, seen=0):
        if not isinstance(value, str) or "${" not in value or seen > 20:
            return value
        substitutions.visit()
        m = pattern.fullmatch(value.strip())
        if m:
            target, ok = lookup(path[:-1], m.group(1).strip())
            return resolve_value(target, path, seen + 1) if ok else value

        def sub(mm):
            target, ok = lookup(path[:-1], mm.group(1).strip())
            target = resolve_value(target, path, seen + 1) if ok else None
            return str(target) if ok and isinstance(target, (str, int, float, bool)) else mm.group(0)
        out = pattern.sub(sub, value)
        if len(out) > MAX_STRING_BYTES:  # "${a}${a}" with a = "${b}${b}" …: doubling at every level
            raise LoadError(f"config interpolation {value[:60]!r} expands to more than {MAX_STRING_BYTES:,} characters")
        return out

    def walk(node, path):
        budget.visit()
        if isinstance(node, dict):
            return {k: walk(v, path + [str(k)]) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, path + [str(i)]) for i, v in enumerate(node)]
        return resolve_value(node, path)

    return walk(cfg, [])


def iter_inert(obj: Any, max_depth: int = 8):
    """Yield every Inert record reachable from obj through containers and record state."""
    seen: set[int] = set()
    stack = [(obj, 0)]
    while stack:
        cur, depth = stack.pop()
        if id(cur) in seen or depth > max_depth:
            continue
        seen.add(id(cur))
        if isinstance(cur, Inert):
            yield cur
            stack.extend((v, depth + 1) for v in (cur.state, cur.args, cur.items, cur.list_items))
        elif isinstance(cur, dict):
            stack.extend((v, depth + 1) for v in cur.values())
        elif isinstance(cur, (list, tuple)):
            stack.extend((v, depth + 1) for v in cur)


def pickle_bytes(path: Path, limit: int = 64 << 20) -> bytes | None:
    """The raw data.pkl of a torch zip archive, for cheap detection (no unpickling)."""
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith("/data.pkl") or name == "data.pkl":
                    info = z.getinfo(name)
                    if info.file_size > limit:
                        return None
                    return z.read(name)
    except (zipfile.BadZipFile, OSError, KeyError, EOFError):
        return None
    return None


__all__ = ["Inert", "NodeBudget", "TorchArchive", "UnsafePickle", "UnsafeSize", "check_tensor_geometry",
           "check_zip_members", "global_name", "iter_inert", "resolve_interpolations", "run_unpickler", "safe_load",
           "to_plain"]
