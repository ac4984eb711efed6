"""Checkpoints as users hold them (issue 16): tokenizers that the model names instead of shipping
(a WordPiece vocab.txt, a GPT-2 vocab.json + merges.txt, a name in the config resolved in a hub
cache), and families memaudit does not know, loaded through their own modeling code only with
--trust-remote-code. Everything is built in tmp_path; the hub cache is a folder laid out as
huggingface_hub lays it out, read offline (HF_HUB_OFFLINE, set by conftest.py)."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import memaudit
from memaudit.adapters import LoadError
from memaudit.cli import app
from test_adapters import (COND, D, EPS, H, NB, FakePackages, duo_config, lightning_ckpt, loglinear_sigma, prefixed,
                           random_state, write_safetensors)

L = 12
BERT_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "the", "cat", "##s", "sat", "on",
               "mat", "##ting", "dog", "run", "##ning", "a", "big", "red"]
runner = CliRunner()


def udlm_dir(root: Path, vocab: int, seed: int = 70, **config) -> Path:
    """A UDLM checkpoint as kuleshov-group pushes it to the hub: config.json + model.safetensors,
    no tokenizer.json."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({
        "architectures": ["UDLM"], "model_type": "udlm", "vocab_size": vocab, "model_length": L, "hidden_dim": D,
        "cond_dim": COND, "n_blocks": NB, "n_heads": H, "time_conditioning": True, "cfg": False, **config}))
    write_safetensors(root / "model.safetensors", prefixed(random_state(seed=seed, vocab=vocab)))
    return root


def write_wordpiece(folder: Path, tokens=BERT_TOKENS, with_config: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    if with_config:  # as bert-base-uncased on the hub has it
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                                  "do_lower_case": True}))
    return folder


GPT2_PIECES = ["<|endoftext|>", "h", "e", "l", "o", "w", "r", "d", "Ġ", "c", "a", "t", "he", "ll", "hell", "hello",
               "Ġw", "or", "Ġwor", "ld", "Ġworld", "Ġc", "at", "Ġcat"]
GPT2_MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "Ġ c", "a t", "Ġc at"]


def write_bpe(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(GPT2_PIECES)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(GPT2_MERGES) + "\n")
    return folder


def wordpiece_text(ids) -> str:
    """What a reader should see: tokens separated by spaces, `##` continuations joined to the word."""
    return " ".join(BERT_TOKENS[i] for i in ids).replace(" ##", "")


def hub_snapshot(hf_home: Path, repo: str, sha: str) -> Path:
    """A repo in the hub cache as huggingface_hub lays it out: models--org--name/refs/main naming
    the commit, snapshots/<commit>/ holding the files."""
    repo_dir = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)
    snapshot = repo_dir / "snapshots" / sha
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


# ------------------------------------------------------------------------ tokenizer files beside
def test_wordpiece_vocab_beside_a_udlm_checkpoint_decodes_samples_to_words(tmp_path):
    ckpt = write_wordpiece(udlm_dir(tmp_path / "udlm", vocab=len(BERT_TOKENS)))
    den = memaudit.load(ckpt)
    assert den.tokenizer is not None
    record = den.provenance["tokenizer"]
    assert record["kind"] == "folder" and record["path"] == str(ckpt.resolve())
    assert record["found_by"] == "tokenizer files beside the checkpoint"
    ids = [2, 5, 8, 9, 10, 11, 7, 12, 3, 0]
    assert den.decode(ids) == "[CLS] hello cats sat on the mat [SEP] [PAD]"
    result = memaudit.scan(ckpt, samples=4, steps=4, seed=0, show_progress=False)
    assert result.texts == [wordpiece_text(row) for row in result.tokens.tolist()]


def test_gpt2_bpe_beside_a_checkpoint_decodes_with_spaces_and_special_tokens(tmp_path):
    # Duo's OpenWebText models: GPT-2 plus one mask slot the tokenizer does not have
    ckpt = write_bpe(udlm_dir(tmp_path / "owt", vocab=len(GPT2_PIECES) + 1))
    den = memaudit.load(ckpt)
    ids = [GPT2_PIECES.index(p) for p in ("hello", "Ġworld", "Ġcat", "<|endoftext|>", "he", "ll")]
    assert den.decode(ids) == "hello world cat<|endoftext|>hell"
    assert den.tokenizer.encode("hello world", add_special_tokens=False).ids == ids[:2]


def test_scan_report_decodes_samples_and_states_the_tokenizer_source(tmp_path):
    ckpt = write_wordpiece(udlm_dir(tmp_path / "udlm", vocab=len(BERT_TOKENS)))
    out = tmp_path / "report"
    result = runner.invoke(app, ["scan", str(ckpt), "--samples", "4", "--steps", "4", "--out", str(out),
                                 "--exit-zero"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    model = summary["provenance"]["model"]
    assert model["tokenizer"]["kind"] == "folder" and model["tokenizer"]["path"] == str(ckpt.resolve())
    assert model["modeling_code"] == "memaudit"
    html = (out / "report.html").read_text()
    assert f"tokenizer: folder {ckpt.resolve()}; tokenizer files beside the checkpoint" in html
    import pandas as pd

    samples = pd.read_parquet(out / "samples.parquet")
    assert list(samples["text"]) == [wordpiece_text(row) for row in samples["token_ids"]]
    # the page shows each sample token by token, `##` continuations glued to their word: the
    # pieces of one sample read, put together, exactly as its decoded text
    import html as html_lib
    import re

    blocks = re.findall(r'<div class="toks">(.*?)</div>', html)
    shown = ["".join(html_lib.unescape(p) for p in re.findall(r'<span class="tok [^"]*" title="[^"]*">([^<]*)</span>',
                                                               block)) for block in blocks]
    # (a continuation piece that opens a sample has no word to join and keeps its `##`)
    assert shown and set(shown) <= set(samples["text"]) and not any("##" in text[1:] for text in shown)
    assert "remote-code" not in html  # natively loaded: no remote-code notice
    # rebuilt from the report files alone, the page reads the same tokenizer folder again
    from memaudit.report.scan_page import write_scan_html

    assert write_scan_html(out, name="again.html").read_text() == html


def test_tokenizer_whose_vocabulary_does_not_match_is_refused_with_exit_4(tmp_path):
    ckpt = write_wordpiece(udlm_dir(tmp_path / "udlm", vocab=len(BERT_TOKENS) + 5))
    result = runner.invoke(app, ["scan", str(ckpt), "--samples", "4", "--steps", "4"])
    assert result.exit_code == 4, result.output
    assert "vocabulary mismatch: tokenizer has 20 tokens, model has 25" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    # the same mismatch through --tokenizer, on a checkpoint that has none of its own
    bare = udlm_dir(tmp_path / "bare", vocab=len(GPT2_PIECES) + 1)
    result = runner.invoke(app, ["inspect", str(bare), "--tokenizer", str(write_wordpiece(tmp_path / "bert"))])
    assert result.exit_code == 4 and "vocabulary mismatch" in result.stderr


def test_tokenizer_option_overrides_and_is_recorded(tmp_path):
    ckpt = udlm_dir(tmp_path / "udlm", vocab=len(BERT_TOKENS))
    assert memaudit.load(ckpt).tokenizer is None
    folder = write_wordpiece(tmp_path / "bert-tok", with_config=True)
    result = runner.invoke(app, ["inspect", str(ckpt), "--tokenizer", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["tokenizer"]["present"] and doc["tokenizer"]["vocab_size"] == len(BERT_TOKENS)
    assert doc["tokenizer"]["kind"] == "folder" and doc["tokenizer"]["found_by"] == "--tokenizer"
    sampled = runner.invoke(app, ["sample", str(ckpt), "--tokenizer", str(folder), "--n", "2", "--steps", "2",
                                  "--json"])
    assert sampled.exit_code == 0, sampled.output
    rows = json.loads(sampled.stdout)["samples"]
    assert [r["text"] for r in rows] == [wordpiece_text(r["tokens"]) for r in rows]


# ---------------------------------------------------------------------------- names in a hub cache
@pytest.fixture()
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_lightning_config_names_a_tokenizer_found_in_the_hub_cache(tmp_path, hf_home):
    sha = "9f1c0de5a1b2c3d4e5f60718293a4b5c6d7e8f90"
    write_wordpiece(hub_snapshot(hf_home, "bert-base-uncased", sha), with_config=True)
    fakes = FakePackages(tmp_path / "fakes")
    sd = random_state(seed=71, vocab=len(BERT_TOKENS))
    with fakes:  # UDLM's LM1B runs: no pickled tokenizer, only its name in the config
        ckpt = lightning_ckpt(prefixed(sd), duo_config(**{"data.tokenizer_name_or_path": "bert-base-uncased",
                                                           "model.length": L}))
        torch.save(ckpt, tmp_path / "lm1b.ckpt")
    den = memaudit.load(tmp_path / "lm1b.ckpt")
    record = den.provenance["tokenizer"]
    assert record["kind"] == "hub" and record["hub_id"] == "bert-base-uncased" and record["revision"] == sha
    assert record["found_by"] == "named by the config (data.tokenizer_name_or_path)"
    assert den.decode([5, 14, 16]) == "hello dogning"
    out = tmp_path / "report"
    result = runner.invoke(app, ["scan", str(tmp_path / "lm1b.ckpt"), "--samples", "4", "--steps", "4", "--out",
                                 str(out), "--exit-zero"])
    assert result.exit_code == 0, result.output
    model = json.loads((out / "summary.json").read_text())["provenance"]["model"]
    assert model["tokenizer"]["revision"] == sha and sha in model["tokenizer_source"]
    assert f"hub bert-base-uncased @ {sha}" in (out / "report.html").read_text()


def test_hub_checkpoint_whose_config_names_its_tokenizer_resolves_offline(tmp_path, hf_home):
    model_sha, tok_sha = "1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222"
    snap = hub_snapshot(hf_home, "org/tiny-owt-duo", model_sha)
    udlm_dir(snap, vocab=len(GPT2_PIECES) + 1, tokenizer_name_or_path="gpt2")
    write_bpe(hub_snapshot(hf_home, "gpt2", tok_sha))
    den = memaudit.load("org/tiny-owt-duo")  # a hub id, offline, from the cache
    assert den.provenance["hub_id"] == "org/tiny-owt-duo" and den.provenance["revision"] == model_sha
    record = den.provenance["tokenizer"]
    assert (record["kind"], record["hub_id"], record["revision"]) == ("hub", "gpt2", tok_sha)
    assert den.decode([GPT2_PIECES.index("hello"), GPT2_PIECES.index("Ġcat")]) == "hello cat"


def test_named_tokenizer_missing_from_the_cache(tmp_path, hf_home):
    ckpt = udlm_dir(tmp_path / "udlm", vocab=len(BERT_TOKENS), tokenizer_name_or_path="bert-base-uncased")
    den = memaudit.load(ckpt)  # named by the config: a note, and the scan runs on token ids
    assert den.tokenizer is None and den.provenance["tokenizer"]["kind"] == "none"
    assert any("bert-base-uncased" in n and "--tokenizer" in n for n in den.provenance["notes"])
    result = runner.invoke(app, ["inspect", str(ckpt), "--tokenizer", "bert-base-uncased"])  # asked for: an error
    assert result.exit_code == 4 and "could not resolve tokenizer bert-base-uncased (offline" in result.stderr


# ------------------------------------------------------------------------------------ remote code
TOY_V, TOY_L, TOY_D = 11, 6, 8
MODELING = '''
import torch
from transformers import PretrainedConfig, PreTrainedModel

open({marker!r}, "w").write("the modeling code ran")


class ToyConfig(PretrainedConfig):
    model_type = "toy-uniform-diffusion"

    def __init__(self, vocab_size=11, hidden=8, model_length=6, **kwargs):
        self.vocab_size, self.hidden, self.model_length = vocab_size, hidden, model_length
        super().__init__(**kwargs)


class ToyDiffusion(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.emb = torch.nn.Embedding(config.vocab_size, config.hidden)
        self.time = torch.nn.Linear(1, config.hidden)
        self.out = torch.nn.Linear(config.hidden, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, timesteps, return_dict=None):
        h = self.emb(input_ids) + self.time(timesteps[:, None].float())[:, None, :]
        return self.out(torch.tanh(h + h.mean(1, keepdim=True)))
'''


def toy_weights(seed=3) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"emb.weight": torch.randn(TOY_V, TOY_D, generator=g), "time.weight": torch.randn(TOY_D, 1, generator=g),
            "time.bias": torch.randn(TOY_D, generator=g), "out.weight": torch.randn(TOY_V, TOY_D, generator=g),
            "out.bias": torch.randn(TOY_V, generator=g)}


def toy_reference(w, x, sigma):
    """The toy network's forward, written out here from its weights."""
    h = w["emb.weight"][x] + (sigma[:, None] * w["time.weight"][:, 0] + w["time.bias"])[:, None, :]
    return torch.log_softmax(torch.tanh(h + h.mean(1, keepdim=True)) @ w["out.weight"].T + w["out.bias"], -1)


def remote_dir(root: Path, **config) -> tuple[Path, Path, dict]:
    root.mkdir(parents=True)
    marker = root.parent / f"{root.name}-MODELING-CODE-RAN"
    (root / "modeling_toy.py").write_text(textwrap.dedent(MODELING.format(marker=str(marker))))
    (root / "config.json").write_text(json.dumps({
        "model_type": "toy-uniform-diffusion", "architectures": ["ToyDiffusion"],
        "auto_map": {"AutoConfig": "modeling_toy.ToyConfig", "AutoModelForMaskedLM": "modeling_toy.ToyDiffusion"},
        "vocab_size": TOY_V, "hidden": TOY_D, "model_length": TOY_L, **config}))
    weights = toy_weights()
    write_safetensors(root / "model.safetensors", weights)
    return root, marker, weights


def test_remote_code_is_refused_without_the_flag_and_never_runs(tmp_path):
    ckpt, marker, _ = remote_dir(tmp_path / "toy", time_input="sigma", noise_schedule={"name": "loglinear"})
    for command in ("scan", "recover", "sample", "inspect"):
        result = runner.invoke(app, [command, str(ckpt)])
        assert result.exit_code == 4, (command, result.output)
        assert "--trust-remote-code" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(LoadError, match="not a family memaudit loads natively"):
        memaudit.load(ckpt)
    assert not marker.exists()


def test_remote_code_with_the_flag_matches_its_own_forward_and_marks_the_report(tmp_path):
    ckpt, marker, w = remote_dir(tmp_path / "toy", noise_schedule={"name": "loglinear", "eps": EPS},
                                 time_input="sigma")
    den = memaudit.load(ckpt, trust_remote_code=True)
    assert marker.exists()
    assert den.family == "remote:toy-uniform-diffusion" and den.time_input == "sigma"
    assert (den.vocab_size, den.seq_len) == (TOY_V, TOY_L)
    assert den.provenance["modeling_code"] == "checkpoint"
    x = torch.randint(0, TOY_V, (3, TOY_L), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.05, 0.4, 0.9])
    got = den(x, t)
    assert torch.allclose(got, toy_reference(w, x, loglinear_sigma(t)), atol=1e-5)
    with torch.no_grad():  # and equal to the module's own forward pass, fed sigma_t
        own = torch.log_softmax(den.model(input_ids=x, timesteps=loglinear_sigma(t)).float(), -1)
    assert torch.allclose(got, own, atol=1e-6)

    out = tmp_path / "report"
    result = runner.invoke(app, ["scan", str(ckpt), "--trust-remote-code", "--samples", "4", "--steps", "4",
                                 "--out", str(out), "--exit-zero"])
    assert result.exit_code == 0, result.output
    assert "memaudit: modeling code from the checkpoint was executed" in result.stderr
    assert "Loading weights" not in result.stderr  # transformers' progress bar: not on a pipe
    model = json.loads((out / "summary.json").read_text())["provenance"]["model"]
    assert model["modeling_code"] == "checkpoint"
    assert any("modeling code from the checkpoint was executed" in n for n in model["notes"])
    html = (out / "report.html").read_text()
    assert '<div class="note" id="remote-code"><b>Modeling code from the checkpoint was executed</b>' in html
    assert "modeling_toy.ToyDiffusion from modeling_toy.py" in html


def test_remote_code_time_input_and_schedule_from_the_user(tmp_path):
    ckpt, _, w = remote_dir(tmp_path / "toy")  # the config says neither
    result = runner.invoke(app, ["inspect", str(ckpt), "--trust-remote-code"])
    assert result.exit_code == 4 and "--time-input sigma|t|none" in result.stderr
    den = memaudit.load(ckpt, trust_remote_code=True, time_input="t", schedule="loglinear:0.01")
    assert den.time_input == "t" and den.schedule.to_dict()["eps"] == 0.01
    assert den.provenance["remote_code"]["time_input_from"] == "--time-input"
    x = torch.randint(0, TOY_V, (2, TOY_L), generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.2, 0.6])
    assert torch.allclose(den(x, t), toy_reference(w, x, t), atol=1e-5)  # raw t, as stated
    bad = runner.invoke(app, ["inspect", str(ckpt), "--trust-remote-code", "--time-input", "t", "--schedule", "cosine"])
    assert bad.exit_code == 2 and "loglinear" in bad.stderr


def test_remote_masked_diffusion_is_refused(tmp_path):
    ckpt, marker, _ = remote_dir(tmp_path / "toy", time_input="sigma", noise_schedule="loglinear",
                                 diffusion="absorbing_state")
    result = runner.invoke(app, ["inspect", str(ckpt), "--trust-remote-code"])
    assert result.exit_code == 4 and "masked (absorbing-state) diffusion" in result.stderr
    assert not marker.exists()  # refused from the config, before its code is imported


def test_native_family_keeps_loading_natively_with_the_flag(tmp_path):
    ckpt = write_wordpiece(udlm_dir(tmp_path / "udlm", vocab=len(BERT_TOKENS)))
    (ckpt / "modeling_udlm.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w')\n")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForMaskedLM": "modeling_udlm.UDLM"}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    result = runner.invoke(app, ["inspect", str(ckpt), "--trust-remote-code", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["modeling_code"] == "memaudit" and doc["family"] == "udlm"
    assert any("trust-remote-code ignored" in n for n in doc["notes"])
    assert not (tmp_path / "RAN").exists()
    misuse = runner.invoke(app, ["inspect", str(ckpt), "--time-input", "sigma"])
    assert misuse.exit_code == 2 and "loads natively" in misuse.stderr


# ----------------------------------------------------------------------- transformers, on demand
def test_transformers_is_imported_only_when_a_tokenizer_folder_or_remote_code_needs_it(tmp_path):
    import subprocess
    import sys

    ckpt = udlm_dir(tmp_path / "udlm", vocab=len(BERT_TOKENS))
    code = ("import sys, memaudit, memaudit.cli; den = memaudit.load(sys.argv[1]); "
            "print(den.tokenizer is None, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(ckpt)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_without_transformers_tokenizer_free_loads_work_and_folders_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    bare = udlm_dir(tmp_path / "bare", vocab=len(BERT_TOKENS))
    assert memaudit.load(bare).tokenizer is None
    with pytest.raises(LoadError, match=r"needs transformers \(pip install 'memaudit-dlm\[hub\]'\)"):
        memaudit.load(write_wordpiece(udlm_dir(tmp_path / "udlm", vocab=len(BERT_TOKENS))))


def test_hub_downloads_fetch_python_files_only_with_trust_remote_code(tmp_path, monkeypatch):
    import huggingface_hub

    ckpt = udlm_dir(tmp_path / "udlm", vocab=len(BERT_TOKENS))
    asked = []

    def fake_snapshot_download(repo_id, **kwargs):
        asked.append((repo_id, kwargs["allow_patterns"], kwargs["local_files_only"]))
        raise OSError("not in this test")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    for trust in (False, True):
        with pytest.raises(LoadError):
            memaudit.load("org/some-model", trust_remote_code=trust)
        with pytest.raises(LoadError):
            memaudit.load(ckpt, tokenizer="gpt2", trust_remote_code=trust)
    assert [(repo, "*.py" in patterns, offline) for repo, patterns, offline in asked] == [
        ("org/some-model", False, True), ("gpt2", False, True), ("org/some-model", True, True), ("gpt2", True, True)]
