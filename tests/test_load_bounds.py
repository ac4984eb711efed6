"""The checkpoint's own files and the user's data files may not make memaudit allocate what they
declare, abort, or fail with the wrong exit class (issue 24, the checkpoint-files half).

Every case runs `python -m memaudit …` in its own subprocess and checks: the documented exit code,
exactly one line on stderr (`memaudit: …`, naming what was refused), no traceback, and the child's
peak resident memory (os.wait4's ru_maxrss of that one child) under 1 GiB — measured, with no
address-space limit to turn a runaway allocation into a MemoryError. Every payload is written by
hand here: pickles opcode by opcode, sparse files by truncate().
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from test_load_limits import native

PEAK_RSS_LIMIT = 1 << 30
CHILD_TIMEOUT_S = 300


# --------------------------------------------------------------------------------- the harness
def run_memaudit(*args: str, cwd: Path | None = None) -> tuple[int, str, str, int]:
    """→ (exit code, stdout, stderr, peak RSS in bytes) of `python -m memaudit ARGS` in a child."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEMAUDIT_NO_PROGRESS": "1", "NO_COLOR": "1"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "memaudit", *args], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"),
                usage.ru_maxrss * 1024)


def check_refused(args, code: int, *needles: str, cwd: Path | None = None) -> str:
    rc, _out, err, peak = run_memaudit(*map(str, args), cwd=cwd)
    lines = err.splitlines()
    assert rc == code, f"exit {rc}, expected {code}: {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("memaudit: "), f"not one line: {err[-2000:]!r}"
    assert "Traceback" not in err and "panicked" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / 2**30:.2f} GiB ≥ 1 GiB: {lines[0]}"
    return lines[0]


@pytest.fixture(scope="module")
def ck(tmp_path_factory) -> Path:
    """A tiny native checkpoint with a tokenizer.json (V=16, L=8)."""
    return native(tmp_path_factory.mktemp("bounds") / "ck", tokenizer=True)


def copy_ck(ck: Path, dst: Path) -> Path:
    shutil.copytree(ck, dst)
    return dst


def edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


# --------------------------------------------------------------------------------- pickles
def torch_archive(path: Path, pkl: bytes) -> Path:
    """A torch.save-shaped zip archive (members stored, not compressed) around a hand-written pickle."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


def fivefold_bomb(rounds: int = 9, seed: int = 1000) -> bytes:
    """str(list(str(list(…'a'·1000…)))) with str and list memoized: each round one list of n
    one-character strings and a repr five times longer; 9 rounds describe ~2·10⁹ characters in
    about 1.1 KB (3.6 GB peak before the build budget)."""
    p = b"\x80\x02cbuiltins\nstr\nq\x00cbuiltins\nlist\nq\x010"  # GLOBAL, BINPUT, POP: both kept in the memo
    p += b"0" + b"h\x00h\x01" * rounds                              # BINGET str, BINGET list per round
    s = b"a" * seed
    p += b"X" + struct.pack("<I", len(s)) + s
    p += b"\x85R\x85R" * rounds                                   # TUPLE1 REDUCE (list), TUPLE1 REDUCE (str)
    return p + b"."


def test_fivefold_str_list_bomb_is_refused_before_it_is_built(tmp_path):
    path = torch_archive(tmp_path / "bomb.ckpt", fivefold_bomb())
    assert path.stat().st_size < 2000
    check_refused(["inspect", path], 4, "bomb.ckpt", "builtins.str")


def test_str_of_a_repeated_memoized_string_is_charged_by_size(tmp_path):
    """str([s] * 600) of one memoized 1 MiB string: a 1 MiB pickle, a 600 MiB repr."""
    s = b"b" * (1 << 20)
    pkl = (b"\x80\x02cbuiltins\nstr\nX" + struct.pack("<I", len(s)) + s  # GLOBAL str, BINUNICODE s
           + b"q\x000](" + b"h\x00" * 600 + b"e\x85R.")               # memo it, POP, [s, s, …], str(…)
    path = torch_archive(tmp_path / "repeat.ckpt", pkl)
    check_refused(["inspect", path], 4, "repeat.ckpt", "MiB of values")


def test_list_of_a_memoized_string_called_again_and_again_is_charged(tmp_path):
    """2,000 × list(s) of one memoized 100,000-character string: a 112 KB pickle, 1.6 GB of lists
    (1.8 GB peak before the build budget)."""
    s = b"a" * 100_000
    pkl = (b"\x80\x02cbuiltins\nlist\nq\x01X" + struct.pack("<I", len(s)) + s + b"q\x020]("
           + b"h\x01h\x02\x85R" * 2000 + b"e.")
    path = torch_archive(tmp_path / "lists.ckpt", pkl)
    check_refused(["inspect", path], 4, "lists.ckpt", "builtins.list")


def test_bytearray_with_a_size_is_refused_before_allocating(tmp_path):
    pkl = b"\x80\x02cbuiltins\nbytearray\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85R."   # bytearray(10**12)
    path = torch_archive(tmp_path / "ba.ckpt", pkl)
    check_refused(["inspect", path], 4, "builtins.bytearray")


def test_reconstructor_of_subprocess_popen_is_refused(tmp_path):
    pkl = (b"\x80\x02ccopyreg\n_reconstructor\ncsubprocess\nPopen\ncbuiltins\nobject\nN\x87R"
           b"}X\x04\x00\x00\x00argsX\x02\x00\x00\x00idsb.")
    path = torch_archive(tmp_path / "popen.ckpt", pkl)
    check_refused(["inspect", path], 4, "refusing to load", "subprocess.Popen")


def legacy_file(path: Path, numel: int, extra_holes: int = 0) -> Path:
    """A legacy (pre-zip) torch file with one float storage of `numel` elements whose bytes are a
    hole: the file is sparse, st_size = its declared size."""
    class Ref:
        pass

    ref = Ref()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel, None) if obj is ref else None

    class T:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (ref, 0, (numel // 64, 64), (64, 1), False, {}))

    buf = b"".join(pickle.dumps(o, protocol=2) for o in
                   (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
    body = io.BytesIO()
    P(body, protocol=2).dump({"state_dict": {"backbone.vocab_embed.embedding": T()},
                              "hyper_parameters": {"config": {"algo": {"name": "duo"}}}})
    buf += body.getvalue() + pickle.dumps(["0"], protocol=2) + struct.pack("<q", numel)
    with open(path, "wb") as f:
        f.write(buf)
        f.truncate(len(buf) + numel * 4 + extra_holes)
    return path


def test_sparse_legacy_checkpoint_is_not_read_into_memory(tmp_path):
    path = legacy_file(tmp_path / "legacy.ckpt", 1 << 29)   # 2 GiB of holes (6.4 GB peak before)
    check_refused(["inspect", path], 4, "legacy.ckpt")


def test_legacy_pickle_claiming_gigabytes_is_refused(tmp_path):
    path = tmp_path / "legacy-str.ckpt"
    head = b"".join(pickle.dumps(o, protocol=2) for o in
                    (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
    with open(path, "wb") as f:   # BINUNICODE8 of 2 GiB: the bytes are a hole
        f.write(head + b"\x80\x04\x8d" + struct.pack("<Q", 2 << 30))
        f.truncate(f.tell() + (2 << 30))
    check_refused(["inspect", path], 4, "legacy-str.ckpt")


# --------------------------------------------------------------------------------- tokenizers
def padded(ck: Path, dst: Path, length: int) -> Path:
    root = copy_ck(ck, dst)
    edit_json(root / "tokenizer.json", lambda d: d.update(padding={
        "strategy": {"Fixed": length}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
        "pad_type_id": 0, "pad_token": "w0"}))
    return root


@pytest.mark.parametrize("length", [4 * 10 ** 9, 2 ** 64 - 1], ids=["4e9", "2^64-1"])
def test_tokenizer_padding_is_checked_before_the_library_sees_it(ck, tmp_path, length):
    root = padded(ck, tmp_path / "ck", length)
    (tmp_path / "train.txt").write_text("w1 w2 w3 w4 w5\n\n" * 50)
    check_refused(["scan", root, "--train", tmp_path / "train.txt", "--samples", "8", "--out", tmp_path / "r"], 4,
                  "tokenizer.json", "padding.strategy.Fixed")
    check_refused(["inspect", root], 4, "padding.strategy.Fixed")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(truncation={"direction": "Right", "max_length": 2 ** 40, "strategy": "LongestFirst",
                                    "stride": 0}), "truncation.max_length"),
    (lambda d: d["model"]["vocab"].update(big=5 * 10 ** 9), "model.vocab"),
    (lambda d: d.update(added_tokens=[{"id": 2 ** 30, "content": "x", "single_word": False, "lstrip": False,
                                       "rstrip": False, "normalized": False, "special": True}]), "added_tokens"),
], ids=["truncation", "vocab-id", "added-id"])
def test_tokenizer_numbers_are_bounded(ck, tmp_path, edit, field):
    root = copy_ck(ck, tmp_path / "ck")
    edit_json(root / "tokenizer.json", edit)
    check_refused(["inspect", root], 4, "tokenizer.json", field)


def test_a_panic_of_the_tokenizers_library_is_one_load_error(tmp_path):
    """`contained` turns a PanicException into LoadError and swallows the Rust backtrace: the
    tokenizer here skips the JSON checks on purpose (built from unchecked text)."""
    script = tmp_path / "panic.py"
    script.write_text(
        "import json\n"
        "from tokenizers import Tokenizer, models\n"
        "from memaudit.adapters import LoadError\n"
        "from memaudit.adapters.tokenizer_json import contained\n"
        "tok = Tokenizer(models.WordLevel({'a': 0}, unk_token='a'))\n"
        "d = json.loads(tok.to_str())\n"
        "d['padding'] = {'strategy': 'BatchLongest', 'direction': 'Right', 'pad_to_multiple_of': 2**64 - 1,\n"
        "                'pad_id': 0, 'pad_type_id': 0, 'pad_token': 'a'}\n"
        "tok = Tokenizer.from_str(json.dumps(d))\n"
        "try:\n"
        "    with contained('t.json'):\n"
        "        tok.encode_batch(['a a'] * 4)\n"
        "except LoadError as e:\n"
        "    print('LoadError:', e)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                       env={**os.environ, "RUST_BACKTRACE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("LoadError: t.json: the tokenizers library panicked"), r.stdout
    assert r.stderr == ""


# --------------------------------------------------------------------------------- data files
def npy_with_header(path: Path, descr: str, shape: tuple, data: bytes = b"") -> Path:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data)
    return path


@pytest.mark.parametrize("make, needle", [
    (lambda p: npy_with_header(p, "<i8", (100_000_000, 128), b"\0" * 1024), "header claims"),
    (lambda p: np.save(p, np.array([["2020-01-01"] * 8] * 4, dtype="datetime64[D]")) or p, "datetime64"),
    (lambda p: np.save(p, np.array([["a"] * 8] * 4)) or p, "<U1"),
    (lambda p: np.save(p, np.array([[None] * 8] * 4, dtype=object)) or p, "object"),
], ids=["100GB-header", "datetime", "strings", "objects"])
def test_bad_npy_train_files_are_usage_errors(ck, tmp_path, make, needle):
    path = make(tmp_path / "train.npy")
    check_refused(["scan", ck, "--train", path, "--samples", "8", "--out", tmp_path / "r"], 2, "--train", needle)


@pytest.mark.parametrize("name", ["train.npy", "train.txt"])
def test_sparse_train_files_are_refused_without_reading_them(ck, tmp_path, name):
    path = tmp_path / name
    if name.endswith(".npy"):
        npy_with_header(path, "<i8", (1 << 21, 128))
    with open(path, "ab") as f:
        f.truncate(path.stat().st_size + (2 << 30))
    check_refused(["scan", ck, "--train", path, "--samples", "8", "--out", tmp_path / "r"], 2, "sparse")


# --------------------------------------------------------------------------------- schedules, configs
def with_eps(ck: Path, dst: Path, eps: float) -> Path:
    root = copy_ck(ck, dst)
    edit_json(root / "config.json", lambda d: d["schedule"].update(eps=eps))
    return root


def test_absurd_schedule_eps_is_a_load_error(ck, tmp_path):
    check_refused(["inspect", with_eps(ck, tmp_path / "ck", 1e-300)], 4, "schedule.eps")


def test_schedule_eps_outside_the_rules_domain_is_inconclusive_outside_domain(ck, tmp_path):
    root = with_eps(ck, tmp_path / "ck", 0.999999)
    rc, out, err, _ = run_memaudit("scan", str(root), "--samples", "8", "--steps", "4", "--json",
                                   "--out", str(tmp_path / "r"))
    assert rc == 3, err[-2000:]
    doc = json.loads(out)
    assert (doc["verdict"], doc["reason"]) == ("inconclusive", "outside_domain")
    assert doc["domain"]["inside"] is False and "noise schedule ε" in doc["domain"]["outside"][0]


def test_schedule_eps_decides_only_outside_the_domain():
    from dataclasses import replace

    from memaudit.verdict.scan import SCHEDULE_EPS_DOMAIN, Evidence, Rule

    rule = Rule.load(Path(__import__("memaudit").__file__).parent / "calibration" / "rule.json")
    ev = Evidence(n_samples=1, mean_entropy=1.0, mean_entropy_ci=(0.9, 1.1), max_entropy=3.0,
                  near_zero_sample_fraction=0.0, near_zero_sample_fraction_ci=(0.0, 0.0), low_entropy_fraction=0.0,
                  duplicate_rate=0.0, fixed_point_fraction=1.0, t_eval=rule.t_eval)
    assert SCHEDULE_EPS_DOMAIN[0] <= 1e-3 <= SCHEDULE_EPS_DOMAIN[1]
    assert rule.decide(replace(ev, schedule_eps=1e-3)).reason == "too_few_samples"
    assert rule.decide(replace(ev, schedule_eps=0.5)).reason == "outside_domain"
    assert rule.decide(replace(ev, schedule_eps=None)).reason == "too_few_samples"   # geometric, GIDD: not ε
    assert not rule.domain_check(replace(ev, schedule_eps=0.5))["inside"]


def test_native_config_without_n_heads_or_seq_len_is_refused(ck, tmp_path):
    for key in ("n_heads", "seq_len"):
        root = copy_ck(ck, tmp_path / key)
        edit_json(root / "config.json", lambda d: d["model"].pop(key))
        check_refused(["inspect", root], 4, f"model.{key} is missing")


def test_float8_weights_load(ck, tmp_path):
    from safetensors.torch import load_file, save_file

    root = copy_ck(ck, tmp_path / "f8")
    for name in ("model.safetensors", "ema.safetensors"):
        state = load_file(str(root / name))
        save_file({k: v.to(torch.float8_e4m3fn) for k, v in state.items()}, str(root / name))
    rc, _out, err, _ = run_memaudit("inspect", str(root))
    assert rc == 0, err[-2000:]


def test_checkpoint_folder_named_with_byte_ff_loads(ck, tmp_path):
    name = os.fsdecode(b"ck\xff")
    copy_ck(ck, tmp_path / name)
    rc, _out, err, _ = run_memaudit("inspect", name, cwd=tmp_path)
    assert rc == 0, err[-2000:]


def test_deeply_nested_rule_file_is_a_usage_error(ck, tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    check_refused(["scan", ck, "--rule", tmp_path / "deep.json", "--samples", "8", "--out", tmp_path / "r"], 2,
                  "nested too deeply")


def test_resume_with_a_tampered_trainer_state_is_a_load_error(tmp_path):
    out = tmp_path / "run"
    common = ["--out", str(out), "--data", "synthetic", "--n-train", "8", "--preset", "nano", "--batch-size", "4",
              "--warmup", "0"]
    rc, _o, err, _ = run_memaudit("train", *common, "--steps", "1")
    assert rc == 0, err[-2000:]
    state = torch.load(out / "trainer_state.pt", weights_only=True)

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    state["extra"] = Payload()
    torch.save(state, out / "trainer_state.pt")
    line = check_refused(["train", *common, "--steps", "2", "--resume"], 4, "trainer_state.pt", "refusing to load")
    assert "weights_only` set to `False" not in line   # never advise the unsafe load


# ------------------------------------------------------------------------------ --from-list
def test_from_list_reads_a_bounded_prefix_of_an_endless_file(tmp_path):
    """`--from-list /dev/zero` read 3.2 GB before failing; the list is read up to 16 MiB only."""
    check_refused(["scan", "--from-list", "/dev/zero", "--out", tmp_path / "out"], 2, "--from-list", "MiB")
    assert not (tmp_path / "out").exists()
