"""Bad checkpoints that used to hang, allocate gigabytes or crash with a Python exception: every one
must end in exit 4 (EXIT_LOAD) with one line on stderr that names the field or file (issue 10,
defects 4, 5, 7, 9 and complex weights).

Each case builds its checkpoint in a temporary directory. All cases then run through the CLI
(typer's CliRunner) in ONE worker subprocess, so that torch is imported once for the whole table:

* under `RLIMIT_AS` (WORKER_ADDRESS_SPACE): a memory bomb must be refused before it allocates,
  not end as a MemoryError (exit 5) or a kill;
* with a per-case hang guard (CASE_DEADLINE_S; a watchdog, not a speed bar: no assertion reads
  the wall clock): SIGALRM stops a case still running after it, and a FIFO that blocks an
  `open()` is unblocked by a watchdog process that opens it for writing and leaves a marker, so
  the case fails as hung instead of hanging the suite;
* with CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH dropped when the tests run as root, so that a
  chmod 000 file really is unreadable (EACCES).

The worker writes one JSON line per case; each parametrized test checks its own line.
"""
from __future__ import annotations

import collections
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from test_adapters import COND, D, H, L, NB, V, ddit_spec, duo_config, prefixed, random_state

WORKER_ADDRESS_SPACE = 3 << 30   # torch + memaudit.cli use ~0.7 GiB of address space after import
CASE_DEADLINE_S = 120            # a hang guard, not a speed bar: a case still running after this is
                                 # stopped (SIGALRM, the FIFO watchdog) and fails as 'timed out'
WORKER_TIMEOUT_S = 1800           # the whole worker's hang guard

# A tiny native checkpoint: V=16, L=8, d=16, one block, two heads.
NV, NL, ND, NC = 16, 8, 16, 8


# --------------------------------------------------------------------------------------- builders
def native(root: Path, *, ema: bool = True, tokenizer: bool = False, dtype=None) -> Path:
    from memaudit.adapters.native import save_checkpoint
    from memaudit.model import DDiT, DDiTConfig

    torch.manual_seed(0)
    model = DDiT(DDiTConfig(vocab_size=NV, seq_len=NL, hidden_size=ND, cond_dim=NC, n_blocks=1, n_heads=2))
    tok = None
    if tokenizer:
        from tokenizers import Tokenizer, models

        tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(NV)}, unk_token="w0"))
    state = {k: v for k, v in model.state_dict().items() if k != "rotary_emb.inv_freq"}
    save_checkpoint(root, model, {"schedule": {"name": "loglinear", "eps": 1e-3}},
                    ema_state=state if ema else None, tokenizer=tok)
    return root


def edit_config(root: Path, **changes) -> Path:
    """Set dotted config keys of a native checkpoint (value DELETE removes the key)."""
    cfg = json.loads((root / "config.json").read_text())
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    (root / "config.json").write_text(json.dumps(cfg))
    return root


def replace_tensor(path: Path, name: str, tensor: torch.Tensor) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    state[name] = tensor
    save_file(state, str(path))


def fifo(path: Path) -> Path:
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mkfifo(path)
    return path


def lightning(path: Path, cfg: dict | None = None, sd: dict | None = None, extra: dict | None = None) -> Path:
    """A Lightning-shaped .ckpt whose config is a plain dict (no omegaconf needed to write it)."""
    sd = random_state(seed=7) if sd is None else sd
    ckpt = {"state_dict": prefixed(sd), "hyper_parameters": {"config": cfg or duo_config()}, "global_step": 1}
    ckpt.update(extra or {})
    torch.save(ckpt, path)
    return path


def rewrite_zip(src: Path, dst: Path, edit) -> Path:
    """Copy a torch zip archive member by member; edit(name, data) → (data, compress_type)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data, compress = edit(info.filename, zin.read(info.filename))
            zout.writestr(info.filename, data, compress_type=compress)
    return dst


class BytearrayOf:
    """Pickles as builtins.bytearray(<tensor>): unpickling it materialises the tensor's bytes."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce__(self):
        return (bytearray, (self.tensor,))


def shared_dag(levels: int):
    node: list = ["leaf"]
    for _ in range(levels):
        node = [node, node]  # pickled once per level (memo), a tree of 2^levels leaves when walked
    return node


def write_sparse_safetensors(path: Path, shapes: dict[str, tuple]) -> None:
    """A valid float32 safetensors file whose data is a hole: gigabytes on paper, nothing on disk."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = 4
        for s in shape:
            n *= s
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)


def legacy_storage_bomb(path: Path, n_storages: int = 3000, numel: int = 1 << 18) -> Path:
    """A legacy (pre-zip) torch file whose pickle declares n_storages storages of numel floats each,
    but holds none of their bytes: the legacy reader allocates each storage before reading it."""
    class Ref:
        def __init__(self, key):
            self.key = key

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Ref):
                return ("storage", torch.FloatStorage, obj.key, "cpu", numel, None)
            return None

    buf = bytearray()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        buf += pickle.dumps(obj, protocol=2)
    body = __import__("io").BytesIO()
    P(body, protocol=2).dump({"state_dict": {f"w{i}": Ref(str(i)) for i in range(n_storages)},
                              "padding": b"\0" * (1200 << 10)})
    buf += body.getvalue()
    buf += pickle.dumps([str(i) for i in range(n_storages)], protocol=2)
    path.write_bytes(bytes(buf))
    return path


def hf_duo(root: Path, sd: dict, **cfg) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "duo", "vocab_size": V, "model_length": L, "hidden_dim": D, "cond_dim": COND,
              "n_blocks": NB, "n_heads": H, "causal": False}
    config.update(cfg)
    (root / "config.json").write_text(json.dumps(config))
    torch.save(prefixed(sd), root / "pytorch_model.bin")
    return root


def _stride0_state():
    sd = random_state(seed=8)
    sd["vocab_embed.embedding"] = torch.zeros(1).expand(10 ** 8, D)  # 12.8 GB of one float
    return sd


# ------------------------------------------------------------------------------------------ cases
# id → (build(tmp) → (argv, extra), needles that must all appear in the one stderr line)
# extra: {"fifos": [paths the watchdog may unblock], "eacces": path that must be unreadable}
def _native_cfg(**changes):
    return lambda tmp: (["inspect", str(edit_config(native(tmp / "ck"), **changes))], {})


def _native_then(fn, *argv_extra):
    def build(tmp):
        root = native(tmp / "ck", tokenizer=True)
        extra = fn(root) or {}
        return ["inspect", str(root), *argv_extra], extra
    return build


def _fifo_file(name):
    def fn(root):
        return {"fifos": [str(fifo(root / name))]}
    return fn


def _chmod0(name):
    def fn(root):
        (root / name).chmod(0)
        return {"eacces": str(root / name)}
    return fn


def _dangling_ema(root):
    (root / "ema.safetensors").unlink()
    (root / "ema.safetensors").symlink_to(root / "gone" / "ema.safetensors")


def _dir_as_weights(root):
    (root / "ema.safetensors").unlink()
    (root / "model.safetensors").unlink()
    (root / "model.safetensors").mkdir()


def _devzero_as_weights(root):
    (root / "ema.safetensors").unlink()
    (root / "model.safetensors").unlink()
    (root / "model.safetensors").symlink_to("/dev/zero")


def _complex_weights(root):
    for f in ("model.safetensors", "ema.safetensors"):
        replace_tensor(root / f, "blocks.0.norm1.weight", torch.ones(ND, dtype=torch.complex64))


def _int_weights(root):
    for f in ("model.safetensors", "ema.safetensors"):
        replace_tensor(root / f, "blocks.0.norm1.weight", torch.ones(ND, dtype=torch.int32))


def _huge_vocab_sparse(tmp):
    root = native(tmp / "ck", ema=False)
    big = 1 << 25  # 2 GiB per vocabulary-sized float32 tensor, on paper
    shapes = {name: shape for name, shape in ddit_spec(vocab=big, d=ND, cond=NC, n_blocks=1) if shape is not None}
    write_sparse_safetensors(root / "model.safetensors", shapes)
    edit_config(root, **{"model.vocab_size": big})
    return ["inspect", str(root)], {}


def _ckpt(build_ckpt):
    def build(tmp):
        tmp.mkdir(parents=True, exist_ok=True)
        return ["inspect", str(build_ckpt(tmp))], {}
    return build


def _ckpt_stride0(tmp):
    return lightning(tmp / "s.ckpt", sd=_stride0_state())


def _ckpt_bytearray(tmp):
    return lightning(tmp / "b.ckpt", extra={"callbacks": BytearrayOf(torch.zeros(300_000, dtype=torch.uint8))})


def _ckpt_zip_bomb(tmp):
    good = lightning(tmp / "good.ckpt")

    def edit(name, data):
        if name.endswith("/data.pkl"):  # the pickle, then 256 MiB of zeros after its STOP: ~250 KB deflated
            return data + bytes(256 << 20), zipfile.ZIP_DEFLATED
        return data, zipfile.ZIP_STORED
    return rewrite_zip(good, tmp / "bomb.ckpt", edit)


def _ckpt_memo(tmp):
    good = lightning(tmp / "good.ckpt")

    def edit(name, data):
        if name.endswith("/data.pkl"):  # PROTO 2, then None, LONG_BINPUT 0x7ffffff0, POP, the rest
            assert data[:2] == b"\x80\x02"
            return data[:2] + b"Nr" + struct.pack("<I", 0x7FFFFFF0) + b"0" + data[2:], zipfile.ZIP_STORED
        return data, zipfile.ZIP_STORED
    return rewrite_zip(good, tmp / "memo.ckpt", edit)


def _ckpt_dag(tmp):
    return lightning(tmp / "dag.ckpt", cfg={**duo_config(), "sweep": shared_dag(40)})


def _ckpt_doubling(tmp):
    cfg = duo_config()
    cfg["blowup"] = {"k0": "abcdefgh", **{f"k{i}": f"${{blowup.k{i - 1}}}${{blowup.k{i - 1}}}" for i in range(1, 41)}}
    return lightning(tmp / "dbl.ckpt", cfg=cfg)


def _ckpt_cfg(**over):
    return _ckpt(lambda tmp: lightning(tmp / "c.ckpt", cfg=duo_config(**over)))


def _ckpt_complex(tmp):
    sd = random_state(seed=9)
    sd["blocks.0.norm2.weight"] = torch.ones(D, dtype=torch.complex64)
    return lightning(tmp / "cx.ckpt", sd=sd)


def _ckpt_fifo(tmp):
    tmp.mkdir(parents=True, exist_ok=True)
    return ["inspect", str(fifo(tmp / "pipe.ckpt"))], {}


def _hf_bin_stride0(tmp):
    return ["inspect", str(hf_duo(tmp / "hf", _stride0_state()))], {}


def _hf_weight_map_lists(tmp):
    root = tmp / "hf"
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "udlm", "model_length": L, "n_heads": H,
                                                  "time_conditioning": True}))
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": ["x.safetensors"]}}))
    return ["inspect", str(root)], {}


def _hf_length(tmp):
    return ["inspect", str(hf_duo(tmp / "hf", random_state(seed=10), model_length=10 ** 9))], {}


def _hf_bin_fifo(tmp):
    root = hf_duo(tmp / "hf", random_state(seed=11))
    return ["inspect", str(root)], {"fifos": [str(fifo(root / "pytorch_model.bin"))]}


def _legacy_bomb(tmp):
    tmp.mkdir(parents=True, exist_ok=True)
    return ["inspect", str(legacy_storage_bomb(tmp / "legacy.ckpt"))], {}


def _scan_long(tmp):
    root = edit_config(native(tmp / "ck"), **{"model.seq_len": 10 ** 9})
    out = tmp / "report"
    return ["scan", str(root), "--samples", "32", "--steps", "4", "--out", str(out)], {"no_report": str(out)}


def _scan_eps(tmp):
    root = edit_config(native(tmp / "ck"), **{"schedule.eps": 5})
    out = tmp / "report"
    return ["scan", str(root), "--samples", "32", "--steps", "4", "--out", str(out)], {"no_report": str(out)}


CASES = {
    # defect 4: declared sizes checked against the weights and the memory budget before allocating
    "native-hidden-size-1e9": (_native_cfg(**{"model.hidden_size": 10 ** 9}), ["model.hidden_size", "config.json"]),
    "native-hidden-size-float-1e9": (_native_cfg(**{"model.hidden_size": 1e9}), ["model.hidden_size"]),
    "native-n-blocks-1e6": (_native_cfg(**{"model.n_blocks": 10 ** 6}), ["model.n_blocks", "config.json"]),
    "native-vocab-size-1e9": (_native_cfg(**{"model.vocab_size": 10 ** 9}), ["model.vocab_size", "config.json"]),
    "native-seq-len-1e6-inspect": (_native_cfg(**{"model.seq_len": 10 ** 6}), ["model.seq_len", "65536"]),
    "native-seq-len-1e9-scan": (_scan_long, ["model.seq_len", "config.json"]),
    "native-weights-exceed-memory": (_huge_vocab_sparse, ["memory", "model.safetensors"]),
    "hf-model-length-1e9": (_hf_length, ["model_length"]),
    "ckpt-stride0-tensor": (_ckpt(_ckpt_stride0), ["stride", "s.ckpt"]),
    "ckpt-bytearray-of-tensor": (_ckpt(_ckpt_bytearray), ["bytearray", "b.ckpt"]),
    "ckpt-zip-bomb": (_ckpt(_ckpt_zip_bomb), ["compressed", "bomb.ckpt"]),
    "ckpt-memo-index-bomb": (_ckpt(_ckpt_memo), ["memo entry", "memo.ckpt"]),
    "ckpt-config-dag-2^40": (_ckpt(_ckpt_dag), ["nodes", "dag.ckpt"]),
    "ckpt-interpolation-doubling": (_ckpt(_ckpt_doubling), ["interpolations", "dbl.ckpt"]),
    "ckpt-legacy-storages-exceed-file": (_legacy_bomb, ["storages", "legacy.ckpt"]),
    "hf-bin-stride0-tensor": (_hf_bin_stride0, ["stride", "pytorch_model.bin"]),
    # defect 5: malformed config values name the field
    "native-n-heads-0": (_native_cfg(**{"model.n_heads": 0}), ["model.n_heads", "config.json"]),
    "native-n-heads-bool": (_native_cfg(**{"model.n_heads": True}), ["model.n_heads"]),
    "native-odd-head-size": (_native_cfg(**{"model.n_heads": 16}), ["model.n_heads", "head size"]),
    "native-hidden-size-string": (_native_cfg(**{"model.hidden_size": "abc"}), ["model.hidden_size", "'abc'"]),
    "native-model-is-string": (_native_cfg(model="nano"), ["model must be a mapping", "config.json"]),
    "native-schedule-is-string": (_native_cfg(schedule="loglinear"), ["schedule must be a mapping"]),
    "native-tokenizer-is-string": (_native_cfg(tokenizer="tokenizer.json"), ["tokenizer must be a mapping"]),
    "native-schedule-eps-5": (_native_cfg(**{"schedule.eps": 5}), ["schedule.eps", "(0, 1)"]),
    "native-schedule-eps-nan": (_native_cfg(**{"schedule.eps": float("nan")}), ["schedule.eps"]),
    "native-schedule-eps-5-scan": (_scan_eps, ["schedule.eps"]),
    "ckpt-cosine-eps-string": (_ckpt_cfg(**{"noise.type": "cosine", "noise.eps": "abc"}), ["noise.eps"]),
    "ckpt-loglinear-eps-0": (_ckpt_cfg(**{"noise.eps": 0}), ["noise.eps", "(0, 1)"]),
    "ckpt-model-length-1e9": (_ckpt_cfg(**{"model.length": 10 ** 9}), ["model.length"]),
    "hf-weight-map-of-lists": (_hf_weight_map_lists, ["weight_map"]),
    # defect 7: non-regular files are refused, never opened for a blocking read
    "native-weights-fifo": (_native_then(_fifo_file("ema.safetensors")), ["ema.safetensors", "FIFO"]),
    "native-raw-weights-fifo": (_native_then(_fifo_file("model.safetensors"), "--weights", "raw"),
                                ["model.safetensors", "FIFO"]),
    "native-config-fifo": (_native_then(_fifo_file("config.json")), ["config.json", "FIFO"]),
    "native-tokenizer-fifo": (_native_then(_fifo_file("tokenizer.json")), ["tokenizer.json", "FIFO"]),
    "ckpt-file-is-fifo": (_ckpt_fifo, ["pipe.ckpt", "FIFO"]),
    "hf-bin-fifo": (_hf_bin_fifo, ["pytorch_model.bin", "FIFO"]),
    "native-weights-directory": (_native_then(_dir_as_weights), ["model.safetensors", "directory"]),
    "native-weights-dev-zero": (_native_then(_devzero_as_weights), ["model.safetensors", "character device"]),
    # defect 9: unreadable and dangling files say what they are
    "native-weights-eacces": (_native_then(_chmod0("ema.safetensors")), ["ema.safetensors", "permission denied"]),
    "native-config-eacces": (_native_then(_chmod0("config.json")), ["config.json", "permission denied"]),
    "native-ema-broken-symlink-default": (_native_then(_dangling_ema), ["ema.safetensors", "broken symlink"]),
    "native-ema-broken-symlink-explicit": (_native_then(_dangling_ema, "--weights", "ema"),
                                           ["ema.safetensors", "broken symlink"]),
    # non-real weights
    "native-complex64-weights": (_native_then(_complex_weights), ["blocks.0.norm1.weight", "complex64"]),
    "native-int32-weights": (_native_then(_int_weights), ["blocks.0.norm1.weight", "int32"]),
    "ckpt-complex64-weights": (_ckpt(_ckpt_complex), ["blocks.0.norm2.weight", "complex64"]),
}


# ------------------------------------------------------------------------------------------ worker
WORKER = textwrap.dedent('''
    import json, os, signal, subprocess, sys, time

    cases = json.load(open(sys.argv[1]))
    results = open(sys.argv[2], "a")
    deadline = float(sys.argv[3])
    from typer.testing import CliRunner
    from memaudit.cli import app

    class CaseTimeout(BaseException):
        pass

    def on_alarm(signum, frame):
        raise CaseTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    # A reader blocked in open() on a FIFO sees no SIGALRM, and may hold the GIL (safetensors,
    # tokenizers): a separate process (WATCHDOG) opens the FIFOs for writing once the case is
    # late, so the reader gets EOF and the case ends (as a failure: it took too long).
    watchdog_script = sys.argv[4]
    runner = CliRunner()
    for case in cases:
        res = {"id": case["id"]}
        if case.get("eacces"):
            try:
                open(case["eacces"], "rb").close()
                res["skip"] = "cannot make a file unreadable here (root with CAP_DAC_OVERRIDE)"
            except PermissionError:
                pass
        if "skip" not in res:
            watchdog = None
            if case.get("fifos"):
                fired = sys.argv[2] + "." + case["id"] + ".watchdog"
                watchdog = subprocess.Popen([sys.executable, watchdog_script, str(deadline), fired, *case["fifos"]])
            start = time.monotonic()
            signal.alarm(int(deadline) + 5)
            try:
                r = runner.invoke(app, case["argv"])
                res.update(exit_code=r.exit_code, stderr=r.stderr, stdout=r.stdout,
                           exception=None if r.exception is None or isinstance(r.exception, SystemExit)
                           else repr(r.exception)[:500])
            except CaseTimeout:
                res.update(exit_code=None, stderr="", stdout="", exception="timed out")
            finally:
                signal.alarm(0)
                if watchdog is not None:
                    watchdog.kill()
                    watchdog.wait()
            res["seconds"] = time.monotonic() - start      # recorded for the message, never asserted on
            if watchdog is not None and os.path.exists(fired):
                res["exception"] = "timed out (the watchdog unblocked a FIFO)"
        results.write(json.dumps(res) + "\\n")
        results.flush()
''')


WATCHDOG = textwrap.dedent('''
    import os, sys, time

    time.sleep(float(sys.argv[1]))
    while True:
        for f in sys.argv[3:]:
            try:
                os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))   # succeeds only while a reader waits
                open(sys.argv[2], "w").close()                      # tell the worker: the case hung
            except OSError:
                pass
        time.sleep(0.25)
''')


def _limit_worker():
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_ADDRESS_SPACE, WORKER_ADDRESS_SPACE))
    if os.geteuid() == 0:  # drop the capabilities that let root read a chmod 000 file
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP; failure only makes the EACCES cases skip


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("load-limits")
    cases = []
    for i, (case_id, (build, _needles)) in enumerate(CASES.items()):
        argv, extra = build(root / f"c{i}")
        cases.append({"id": case_id, "argv": argv, **extra})
    (root / "cases.json").write_text(json.dumps(cases))
    (root / "worker.py").write_text(WORKER)
    (root / "watchdog.py").write_text(WATCHDOG)
    out = root / "results.jsonl"
    env = {**os.environ, "MEMAUDIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "NO_COLOR": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                               os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, str(root / "worker.py"), str(root / "cases.json"), str(out),
                               str(CASE_DEADLINE_S), str(root / "watchdog.py")], capture_output=True, text=True, env=env,
                              timeout=WORKER_TIMEOUT_S, preexec_fn=_limit_worker)
        worker = f"worker exit {proc.returncode}: {proc.stderr[-2000:]}"
    except subprocess.TimeoutExpired:
        worker = f"worker killed after {WORKER_TIMEOUT_S} s"
    got = {}
    if out.exists():
        for line in out.read_text().splitlines():
            doc = json.loads(line)
            got[doc["id"]] = doc
    return got, worker, {c["id"]: c for c in cases}


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_checkpoint_is_one_line_exit_4(results, case_id):
    got, worker, cases = results
    assert case_id in got, f"the worker never finished this case ({worker})"
    res = got[case_id]
    if "skip" in res:
        pytest.skip(res["skip"])
    err = res["stderr"]
    context = f"exit {res['exit_code']} after {res['seconds']:.1f} s; exception {res['exception']}; stderr {err!r}"
    assert res["exit_code"] == 4, context
    assert not str(res["exception"]).startswith("timed out"), context   # the watchdog stopped a hang
    assert "Traceback" not in err and "Traceback" not in res["stdout"], context
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("memaudit:"), context
    for needle in CASES[case_id][1]:
        assert needle in err, f"{needle!r} not in the message: {context}"
    if cases[case_id].get("no_report"):
        out = Path(cases[case_id]["no_report"])
        assert not out.exists() or not any(out.iterdir()), f"files left in {out}: {list(out.iterdir())}"


def test_case_table_is_large_enough():
    assert len(CASES) >= 25


def test_parameter_shapes_match_the_model():
    from memaudit.model import DDiT, DDiTConfig

    cfg = DDiTConfig(vocab_size=11, seq_len=7, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=4, mlp_ratio=2)
    model = DDiT(cfg)
    state = collections.OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items()
                                    if k != "rotary_emb.inv_freq")
    assert list(state.items()) == list(cfg.parameter_shapes().items())
    assert cfg.num_parameters() == model.num_parameters()


def test_valid_tiny_checkpoints_still_load(tmp_path):
    """The limits refuse nothing legitimate: the builders' unmodified checkpoints load."""
    import memaudit

    den = memaudit.load(native(tmp_path / "ck", tokenizer=True))
    assert den.weights == "ema" and den.seq_len == NL
    assert memaudit.load(lightning(tmp_path / "ok.ckpt")).vocab_size == V
    assert memaudit.load(hf_duo(tmp_path / "hf", random_state(seed=12))).family == "duo"
    # a small stride-0 view (e.g. an expanded buffer) is within the slack and still loads
    from memaudit.adapters.safe_pickle import safe_load

    torch.save({"x": torch.zeros(1).expand(1000)}, tmp_path / "small.pt")
    assert safe_load(tmp_path / "small.pt")["x"].shape == (1000,)
