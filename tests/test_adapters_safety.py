"""Loading never executes checkpoint code, and every bad checkpoint ends in one clear line and exit 4.

Malicious pickles are real: a class whose __reduce__ makes pickle call os.system / exec / eval /
subprocess on load, saved with torch.save. memaudit must refuse them, name the callable, and the
file the payload would create must never appear.
"""
from __future__ import annotations

import builtins
import json
import os
import pickle
import subprocess

import pytest
import torch
from typer.testing import CliRunner

import memaudit
from memaudit.adapters import LoadError
from memaudit.adapters.safe_pickle import Inert, UnsafePickle, safe_load, to_plain
from memaudit.cli import app
from test_adapters import (COND, D, DELETE, H, NB, V, FakePackages, assert_never_imported, duo_config,
                           lightning_ckpt, prefixed, random_state, real_fast_tokenizer)

runner = CliRunner()


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def assert_one_line_exit_4(result, *needles):
    assert result.exit_code == 4, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    return FakePackages(tmp_path_factory.mktemp("fakes-safety"))


def save_duo(path, fakes, sd=None, cfg=None, tokenizer="fast", hp_extra=None, ema=None, legacy=False, tamper=None):
    sd = random_state(seed=60) if sd is None else sd
    with fakes:
        tok = None
        if tokenizer == "fast":
            from transformers.tokenization_utils_fast import PreTrainedTokenizerFast
            tok = PreTrainedTokenizerFast(real_fast_tokenizer(V))
        elif tokenizer is not None:
            from transformers.tokenization_utils_fast import PreTrainedTokenizerFast
            tok = PreTrainedTokenizerFast(tokenizer)
        ckpt = lightning_ckpt(prefixed(sd), cfg or duo_config(), tokenizer=tok, ema=ema, hp_extra=hp_extra)
        if tamper:
            tamper(ckpt)
        torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    assert_never_imported()
    return path


# ------------------------------------------------------------------------------ malicious pickles
PAYLOADS = {
    "posix.system": lambda target: (os.system, f"touch {target}"),
    "builtins.exec": lambda target: (builtins.exec, f"open({str(target)!r}, 'w').close()"),
    "builtins.eval": lambda target: (builtins.eval, f"open({str(target)!r}, 'w')"),
    "subprocess.call": lambda target: (subprocess.call, ["touch", str(target)]),
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
@pytest.mark.parametrize("where", ["hyper_parameters", "state_dict", "top"])
def test_code_executing_pickle_refused_and_payload_never_runs(tmp_path, fakes, name, where):
    target = tmp_path / "PWNED"
    func, arg = PAYLOADS[name](target)

    def tamper(ckpt):
        from evilpayload import Payload
        if where == "hyper_parameters":
            ckpt["hyper_parameters"]["extra"] = Payload(func, arg)
        elif where == "state_dict":
            ckpt["state_dict"]["backbone.blocks.0.norm1.weight"] = Payload(func, arg)
        else:
            ckpt["callbacks"] = Payload(func, arg)

    path = save_duo(tmp_path / "evil.ckpt", fakes, tamper=tamper)
    assert not target.exists()
    err = assert_one_line_exit_4(cli("inspect", path), f"the pickle calls {name}", "refusing to load")
    assert str(path) in err
    assert not target.exists()
    with pytest.raises(UnsafePickle):
        memaudit.load(path)
    assert not target.exists()
    assert_never_imported()


def test_legacy_format_payload_refused(tmp_path, fakes):
    target = tmp_path / "PWNED"

    def tamper(ckpt):
        from evilpayload import Payload
        ckpt["hyper_parameters"]["extra"] = Payload(os.system, f"touch {target}")

    path = save_duo(tmp_path / "legacy.ckpt", fakes, tamper=tamper, legacy=True)
    assert_one_line_exit_4(cli("inspect", path), "posix.system")
    assert not target.exists()


def test_protocol0_reduce_and_getattr_tricks_refused(tmp_path):
    # hand-written pickles: GLOBAL + REDUCE at protocol 0, and a getattr chain to reach os.system
    proto0 = b"cos\nsystem\n(S'touch " + str(tmp_path / "P").encode() + b"'\ntR."
    chained = (b"\x80\x02cbuiltins\ngetattr\ncos\nsystem\nX\x06\x00\x00\x00systemq\x00\x86R.")
    from memaudit.adapters.safe_pickle import run_unpickler

    for data in (proto0, chained):
        with pytest.raises(UnsafePickle):
            run_unpickler(data, lambda pid: None)
    assert not (tmp_path / "P").exists()


def test_inert_records_keep_config_and_tokenizer_state_as_data(tmp_path, fakes):
    path = save_duo(tmp_path / "ok.ckpt", fakes)
    ckpt = safe_load(path)
    cfg = ckpt["hyper_parameters"]["config"]
    assert isinstance(cfg, Inert) and cfg.global_name == "omegaconf.dictconfig.DictConfig"
    assert to_plain(cfg)["algo"]["name"] == "duo"
    tok = ckpt["hyper_parameters"]["tokenizer"]
    assert tok.global_name == "transformers.tokenization_utils_fast.PreTrainedTokenizerFast"
    assert tok.state["_tokenizer"].global_name == "tokenizers.Tokenizer"
    assert_never_imported()


# ----------------------------------------------------------------------- bad checkpoints: exit 4
def test_truncated_ckpt(tmp_path, fakes):
    path = save_duo(tmp_path / "full.ckpt", fakes)
    data = path.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_exit_4(cli("inspect", cut), str(cut))


def test_truncated_storage_detected(tmp_path):
    # a zip whose data.pkl promises more bytes than a storage record holds
    torch.save({"state_dict": {"w": torch.randn(64)}}, tmp_path / "t.pt")
    import zipfile
    src = zipfile.ZipFile(tmp_path / "t.pt")
    with zipfile.ZipFile(tmp_path / "short.ckpt", "w", compression=zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = src.read(info.filename)
            if "/data/" in info.filename:
                data = data[:16]
            out.writestr(info.filename, data)
    with pytest.raises(LoadError, match="truncated|out of bounds|corrupt"):
        safe_load(tmp_path / "short.ckpt")


def test_wrong_shapes_for_config(tmp_path, fakes):
    path = save_duo(tmp_path / "w.ckpt", fakes, cfg=duo_config(**{"model.hidden_size": D * 2}))
    assert_one_line_exit_4(cli("inspect", path), "hidden_size", "wrong shapes")


def test_wrong_tensor_shape(tmp_path, fakes):
    sd = random_state(seed=61)
    sd["blocks.1.attn_out.weight"] = torch.randn(D, D + 1)
    path = save_duo(tmp_path / "s.ckpt", fakes, sd=sd)
    assert_one_line_exit_4(cli("inspect", path), "blocks.1.attn_out.weight", "shape")


def test_missing_key(tmp_path, fakes):
    sd = random_state(seed=62)
    del sd["blocks.0.norm2.weight"]
    path = save_duo(tmp_path / "m.ckpt", fakes, sd=sd)
    assert_one_line_exit_4(cli("inspect", path), "missing weights", "blocks.0.norm2.weight")


def test_nan_weights(tmp_path, fakes):
    sd = random_state(seed=63)
    sd["blocks.0.mlp.0.bias"][3] = float("nan")
    path = save_duo(tmp_path / "n.ckpt", fakes, sd=sd)
    assert_one_line_exit_4(cli("inspect", path), "NaN")


def test_vocabulary_mismatch_declared(tmp_path, fakes):
    path = save_duo(tmp_path / "v.ckpt", fakes, hp_extra={"vocab_size": V + 3})
    assert_one_line_exit_4(cli("inspect", path), "vocabulary mismatch")


def test_vocabulary_mismatch_tokenizer(tmp_path, fakes):
    path = save_duo(tmp_path / "t.ckpt", fakes, tokenizer=real_fast_tokenizer(V + 7))
    assert_one_line_exit_4(cli("inspect", path), "vocabulary mismatch", "tokenizer")


def test_embedding_and_output_vocabularies_disagree(tmp_path, fakes):
    sd = random_state(seed=64)
    sd["output_layer.linear.weight"] = torch.randn(V + 1, D)
    sd["output_layer.linear.bias"] = torch.randn(V + 1)
    path = save_duo(tmp_path / "o.ckpt", fakes, sd=sd)
    assert_one_line_exit_4(cli("inspect", path), "vocabulary mismatch")


def test_missing_time_conditioning_is_an_error_not_a_guess(tmp_path, fakes):
    path = save_duo(tmp_path / "tc.ckpt", fakes, cfg=duo_config(**{"algo.time_conditioning": DELETE}))
    assert_one_line_exit_4(cli("inspect", path), "time_conditioning")


def test_ema_requested_but_absent(tmp_path, fakes):
    path = save_duo(tmp_path / "e.ckpt", fakes)
    assert_one_line_exit_4(cli("inspect", path, "--weights", "ema"), "no EMA weights")


def test_masked_family_exit_4_with_reason(tmp_path, fakes):
    cfg = duo_config(**{"algo.name": "mdlm", "algo.parameterization": "subs", "algo.time_conditioning": False})
    path = save_duo(tmp_path / "mdlm.ckpt", fakes, cfg=cfg)
    assert_one_line_exit_4(cli("inspect", path), "unsupported family", "zero off-mask by construction")


def test_unknown_file_names_supported_families(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    err = assert_one_line_exit_4(cli("inspect", f), "not a recognised checkpoint")
    for fam in ("memaudit", "duo/udlm/uni-d2 .ckpt", "sedd", "hf"):
        assert fam in err


def test_missing_path(tmp_path):
    assert_one_line_exit_4(cli("inspect", tmp_path / "nope" / "x.ckpt"), "no such file")


def test_unknown_hf_model_type_never_runs_remote_code(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "auto_map": {"AutoModel": "m.M"}}))
    (tmp_path / "m.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w')\n")
    assert_one_line_exit_4(cli("inspect", tmp_path), "not a family memaudit loads natively", "--trust-remote-code")
    assert not (tmp_path / "RAN").exists()
    # with the flag, what the config cannot tell (time input, schedule) is refused before any import
    assert_one_line_exit_4(cli("inspect", tmp_path, "--trust-remote-code"), "--time-input sigma|t|none")
    assert_one_line_exit_4(cli("inspect", tmp_path, "--trust-remote-code", "--time-input", "sigma"),
                           "--schedule loglinear[:EPS]")
    assert not (tmp_path / "RAN").exists()


def test_bin_with_pickled_code_is_a_load_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "udlm", "vocab_size": V, "model_length": 8, "hidden_dim": D, "cond_dim": COND,
        "n_blocks": NB, "n_heads": H, "time_conditioning": True}))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"backbone.x": Evil()}, f, protocol=2)
    assert_one_line_exit_4(cli("inspect", tmp_path), "weights_only=True")
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------------------------- inspect output
def test_inspect_json_is_one_document(tmp_path, fakes):
    path = save_duo(tmp_path / "j.ckpt", fakes)
    result = cli("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["family"] == "duo" and doc["weights"] == "raw" and doc["weights_default"] == "raw"
    assert doc["ema_available"] is False
    assert doc["vocab_size"] == V and doc["seq_len"] == duo_config()["data"]["len"]
    assert doc["architecture"]["n_blocks"] == NB and doc["architecture"]["hidden_size"] == D
    assert doc["tokenizer"]["present"] is True and doc["time_input"] == "sigma"
    assert doc["n_parameters"] > 0 and doc["files"]


def test_inspect_human_summary_goes_to_stdout(tmp_path, fakes):
    """inspect's description is its output: `> file` and `| grep` capture it (issue 29)."""
    path = save_duo(tmp_path / "h.ckpt", fakes)
    result = cli("inspect", path)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "scan would use" in result.stdout and "raw weights" in result.stdout


# ------------------------------------------------ the container: zipfile and public torch APIs only
def tensor_zoo():
    """Every kind of tensor torch.save writes: dtypes, views sharing a storage (offsets, strides,
    transposes), scalars, empty and expanded tensors, parameters, nested containers."""
    import collections

    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    return {
        "f32": base, "view": base[1:4, ::2], "t": base.t(), "row": base[2], "f64": torch.randn(4, generator=g).double(),
        "f16": torch.randn(3, 4, generator=g).half(), "bf16": torch.randn(5, generator=g).bfloat16(),
        "i64": torch.arange(7), "i32": torch.arange(5, dtype=torch.int32), "i16": torch.arange(3, dtype=torch.int16),
        "i8": torch.tensor([-3, 4], dtype=torch.int8), "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]), "c64": torch.randn(3, generator=g, dtype=torch.complex64),
        "scalar": torch.tensor(3.5), "empty": torch.empty(0, 4), "expanded": torch.zeros(1).expand(10),
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        "nested": {"list": [torch.ones(2), 3, "x"], "tuple": (torch.zeros(3), None), "set": {1, 2}},
        "od": collections.OrderedDict(a=torch.ones(1), b=2.5),
    }


def assert_same(got, want, where="top"):
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), where
        assert (got.dtype, got.shape, got.stride(), got.storage_offset()) == \
            (want.dtype, want.shape, want.stride(), want.storage_offset()), where
        assert torch.equal(got, want.detach()), where
        return
    assert type(got) is type(want), (where, type(got), type(want))
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == want, where


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_safe_load_matches_torch_load_on_real_files(tmp_path, legacy):
    path = tmp_path / "zoo.pt"
    torch.save(tensor_zoo(), path, _use_new_zipfile_serialization=not legacy)
    got, want = safe_load(path), torch.load(path, weights_only=True)
    assert_same(got, want)
    # views share their storage exactly as torch.load's do
    for name in ("view", "t", "row"):
        assert got[name].untyped_storage().data_ptr() == got["f32"].untyped_storage().data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64])
def test_big_endian_archives_are_byte_swapped(tmp_path, dtype):
    import zipfile

    g = torch.Generator().manual_seed(1)
    base = (100 * torch.randn(4, 3, generator=g)).to(dtype)
    torch.save({"w": base, "v": base[1:, 1]}, tmp_path / "little.pt")
    elsize = base.element_size()

    def swap(data):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(-1, elsize).flip(1).contiguous().numpy().tobytes()

    with zipfile.ZipFile(tmp_path / "little.pt") as zin, zipfile.ZipFile(tmp_path / "big.pt", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:
                data = swap(data)
            zout.writestr(info.filename, data)
    assert_same(safe_load(tmp_path / "big.pt"), torch.load(tmp_path / "little.pt", weights_only=True))


def _rewritten(tmp_path, name, edit):
    """A copy of a small torch.save archive with its members edited: edit(name, data) → (name, data) or None."""
    import zipfile

    torch.save({"w": torch.randn(8)}, tmp_path / "src.pt")
    with zipfile.ZipFile(tmp_path / "src.pt") as zin, zipfile.ZipFile(tmp_path / name, "w") as zout:
        for info in zin.infolist():
            out = edit(info.filename, zin.read(info.filename))
            if out is not None:
                zout.writestr(*out)
    return tmp_path / name


@pytest.mark.parametrize("case, edit, message", [
    ("no-version", lambda n, d: None if n.endswith("/version") else (n, d), "no valid version record"),
    ("bad-version", lambda n, d: (n, b"three") if n.endswith("/version") else (n, d), "no valid version record"),
    ("no-pickle", lambda n, d: None if n.endswith("/data.pkl") else (n, d), "no data.pkl"),
    ("no-folder", lambda n, d: (n.split("/", 1)[1], d), "not in one folder"),
    ("no-storage", lambda n, d: None if "/data/" in n else (n, d), "storage 0 missing"),
    ("bad-byteorder", lambda n, d: (n, b"middle") if n.endswith("/byteorder") else (n, d), "unknown byte order"),
])
def test_malformed_archives_are_one_load_error(tmp_path, case, edit, message):
    path = _rewritten(tmp_path, f"{case}.pt", edit)
    with pytest.raises(LoadError, match=message) as info:
        safe_load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_corrupt_pickle_member_fails_its_crc(tmp_path):
    import zipfile

    torch.save({"w": torch.randn(8)}, tmp_path / "t.pt")
    data = bytearray((tmp_path / "t.pt").read_bytes())
    with zipfile.ZipFile(tmp_path / "t.pt") as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    start = bytes(data).index(pkl)
    data[start + 5] ^= 0xFF  # the pickle's bytes change; its CRC in the zip directory does not
    (tmp_path / "t.pt").write_bytes(bytes(data))
    with pytest.raises(LoadError, match="unreadable or truncated PyTorch archive|corrupt"):
        safe_load(tmp_path / "t.pt")


def test_adapters_use_no_private_torch_api():
    """torch._C.* and other torch._names are torch internals that change without notice; the names
    a pickle mentions ("torch._utils._rebuild_tensor_v2") are strings, never attribute access."""
    import ast
    from pathlib import Path

    import memaudit.adapters as adapters

    for file in sorted(Path(adapters.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                assert not (isinstance(root, ast.Name) and root.id == "torch"), \
                    f"{file.name}:{node.lineno} uses torch private API .{node.attr}"
