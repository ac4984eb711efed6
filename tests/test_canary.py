"""Canaries: template parsing, exposure arithmetic, and the ranking on a model that holds one canary."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from memaudit.canary import CanaryError, Template, encode, exposure, exposure_from_share, run_canaries
from memaudit.data.tokenizer import train_bpe_tokenizer

from memory_fakes import MemoryDenoiser

TEMPLATE = "API_KEY = 'sk_live_{hex:8}'"
SECRET = "API_KEY = 'sk_live_3f9a0c7e'"


def test_template_parse_fill_and_space():
    t = Template.parse(TEMPLATE)
    assert t.log2_space == pytest.approx(32.0)
    assert t.canary("3f9a0c7e") == SECRET
    assert t.canary(SECRET) == SECRET
    draws = t.draw(5, seed=1)
    assert draws == t.draw(5, seed=1) and all(t.pattern().fullmatch(d) for d in draws)
    with pytest.raises(CanaryError):
        t.canary("zzzz")
    with pytest.raises(CanaryError):
        Template.parse("no placeholder")
    with pytest.raises(CanaryError):
        Template.parse("{greek:4}")


def test_exposure_arithmetic():
    assert exposure_from_share(1.0, 20.0) == pytest.approx(0.0)
    assert exposure_from_share(0.5, 1.0) == pytest.approx(1 - math.log2(1.5))
    assert exposure_from_share(0.0, 40.0) == 40.0
    cand = np.arange(1000, dtype=float)
    top = exposure(2000.0, cand, 32.0)
    assert top["outscored_by"] == 0 and top["exposure"] == pytest.approx(math.log2(1001), rel=1e-6)
    lo, hi = top["exposure_ci"]
    assert lo == pytest.approx(-math.log2(1 - 0.025 ** (1 / 1000)), rel=1e-3) and hi == 32.0
    mid = exposure(499.5, cand, 32.0)
    assert mid["exposure"] == pytest.approx(1.0, abs=0.01) and mid["exposure_ci"][0] < 1 < mid["exposure_ci"][1]


@pytest.fixture(scope="module")
def planted_model():
    tpl = Template.parse(TEMPLATE)
    docs = [SECRET] * 5 + tpl.draw(200, seed=9) + ["def f(x):\n    return x + 1\n"] * 20
    tok = train_bpe_tokenizer(docs, vocab_size=300)
    fake = MemoryDenoiser([], vocab_size=tok.get_vocab_size(), seq_len=24, tokenizer=tok)
    ids, _ = encode(fake, tpl, [SECRET])
    fake.stored = ids
    return fake


@pytest.mark.parametrize("estimator", ["pll", "clean", "nelbo"])
def test_inserted_canary_is_exposed_and_a_control_is_not(planted_model, estimator):
    res = run_canaries(planted_model, TEMPLATE, ["3f9a0c7e", "0123abcd"], candidates=150, seed=0,
                       estimator=estimator, threshold=5.0)
    inserted, control = res.canaries
    assert inserted["outscored_by"] == 0 and inserted["exposed"], inserted
    assert inserted["exposure_ci"][0] >= 5
    assert not control["exposed"] and control["exposure"] < 5
    assert res.verdict == "exposed"
    json.dumps(res.summary())


def test_cli_canary_exit_codes_and_json(planted_model, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from memaudit.cli import app
    import memaudit.adapters as adapters

    monkeypatch.setattr(adapters, "as_denoiser", lambda *a, **k: planted_model)
    runner = CliRunner()
    r = runner.invoke(app, ["canary", "ckpt", "--template", TEMPLATE, "--inserted", "3f9a0c7e", "--candidates", "300",
                            "--estimator", "clean", "--json", "--out", str(tmp_path / "r")])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["verdict"] == "exposed" and doc["canaries"][0]["outscored_by"] == 0
    assert json.loads((tmp_path / "r" / "canary.json").read_text())["verdict"] == "exposed"
    (tmp_path / "controls.txt").write_text("0123abcd\n")
    r = runner.invoke(app, ["canary", "ckpt", "--template", TEMPLATE, "--inserted-file", str(tmp_path / "controls.txt"),
                            "--candidates", "200", "--estimator", "clean"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["canary", "ckpt", "--template", "nothing", "--inserted", "x"])
    assert r.exit_code == 2
