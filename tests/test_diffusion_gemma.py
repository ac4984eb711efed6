"""DiffusionGemma (issue 27): loading through transformers' own classes, the memory refusal, bad
directories, the time-free / prompt-conditioned Denoiser, the family's own sampler and the scan.

These tests need transformers with models/diffusion_gemma (the `test` extra pins it). They fail,
never skip, when it is missing: a skipped family test would hide the family's loss.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from memaudit.adapters.diffusion_gemma import MIN_TRANSFORMERS


def _require_family():
    try:
        from transformers.models.diffusion_gemma import DiffusionGemmaForBlockDiffusion  # noqa: F401
    except ImportError as e:  # fail loudly: the family's tests must not skip silently
        pytest.fail(f"transformers >= {MIN_TRANSFORMERS} with DiffusionGemma is required for these tests "
                    f"(pip install -e '.[test]'): {e}")


VOCAB, CANVAS = 128, 16


def build_tiny(folder, dtype=torch.float32, shard: str | None = None, seed: int = 0, tokenizer: bool = False):
    """A tiny DiffusionGemma saved by transformers' own save_pretrained."""
    _require_family()
    from transformers import (DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, DiffusionGemmaTextConfig,
                              Gemma4VisionConfig)

    vision = Gemma4VisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=1,
                                num_key_value_heads=1, head_dim=8, position_embedding_size=16)
    text = DiffusionGemmaTextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, num_key_value_heads=1, head_dim=16, global_head_dim=16,
                                    num_experts=4, top_k_experts=2, moe_intermediate_size=32, sliding_window=8,
                                    max_position_embeddings=128, layer_types=["sliding_attention", "full_attention"])
    config = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=CANVAS)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(config).eval().to(dtype)
    kwargs = {"max_shard_size": "40KB"} if shard else {}
    model.save_pretrained(str(folder), **kwargs)
    if tokenizer:
        from tokenizers import Tokenizer, models, pre_tokenizers

        vocab = {f"w{i}": i for i in range(VOCAB)}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="w3"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("dg") / "fp32")


@pytest.fixture(scope="module")
def tiny_sharded_bf16(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("dg") / "bf16", dtype=torch.bfloat16, shard="yes")


def reference_log_probs(folder, prompt, canvas, dtype, sc=False):
    from transformers import DiffusionGemmaForBlockDiffusion

    model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(folder), dtype=dtype).eval()
    with torch.no_grad():
        logits = model(input_ids=prompt, decoder_input_ids=canvas).logits
        if sc:
            logits = model(input_ids=prompt, decoder_input_ids=canvas, self_conditioning_logits=logits).logits
    return torch.log_softmax(logits.float(), -1)


@pytest.mark.parametrize("which", ["tiny", "tiny_sharded_bf16"])
def test_log_probs_equal_transformers_forward(which, request):
    import memaudit

    folder = request.getfixturevalue(which)
    dtype = torch.float32 if which == "tiny" else torch.bfloat16
    denoiser = memaudit.load(folder)
    assert denoiser.family == "diffusion_gemma" and denoiser.time_free and denoiser.prompt_conditioned
    assert denoiser.vocab_size == VOCAB and denoiser.seq_len == CANVAS
    assert denoiser.architecture()["dtype"] == str(dtype)[6:]
    prompt = torch.tensor([[2, 5, 6, 7]])
    denoiser = denoiser.with_prompt(prompt[0].tolist())
    canvas = torch.randint(0, VOCAB, (3, CANVAS), generator=torch.Generator().manual_seed(1))
    for mode, sc in (("none", False), ("self", True)):
        denoiser.self_conditioning = mode
        ours = denoiser(canvas, torch.full((3,), 0.3))
        assert ours.dtype == torch.float32 and ours.shape == (3, CANVAS, VOCAB)
        ref = reference_log_probs(folder, prompt.expand(3, -1), canvas, dtype, sc=sc)
        assert (ours - ref).abs().max().item() <= 1e-5
        # time-free: t is ignored
        assert torch.equal(ours, denoiser(canvas, torch.zeros(3)))


def test_real_size_config_refused_before_weights(tmp_path):
    from memaudit.adapters import LoadError, load

    _require_family()
    text = dict(model_type="diffusion_gemma_text", vocab_size=262144, hidden_size=2816, intermediate_size=2112,
                num_hidden_layers=30, num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                global_head_dim=512, num_global_key_value_heads=2, num_experts=128, top_k_experts=8,
                moe_intermediate_size=704, sliding_window=1024, max_position_embeddings=262144)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "diffusion_gemma", "canvas_length": 256,
                                                      "dtype": "bfloat16", "text_config": text}))
    with pytest.raises(LoadError) as e:       # no weight file exists: refused on the estimate alone
        load(tmp_path, max_memory=24 * 2**30)
    msg = str(e.value)
    assert "needs about" in msg and "GiB of weights" in msg and "24.00 GiB" in msg and "\n" not in msg
    weights_gib = float(msg.split("(")[1].split(" GiB of weights")[0])
    assert 40 < weights_gib < 60          # ≈ 25 B parameters in bf16


def test_max_memory_refuses_a_small_model_too(tiny):
    from typer.testing import CliRunner

    from memaudit.cli import app

    result = CliRunner().invoke(app, ["scan", str(tiny), "--max-memory", "100KB", "--samples", "8"])
    assert result.exit_code == 4
    assert "more than --max-memory" in result.output and "refusing before reading any weight" in result.output


def test_bad_directories_end_in_one_line(tiny, tmp_path):
    from memaudit.adapters import LoadError, load

    sharded = tmp_path / "sharded"
    build_tiny(sharded, shard="yes")
    index = sharded / "model.safetensors.index.json"
    shard = sorted(p for p in os.listdir(sharded) if p.startswith("model-"))[0]
    os.remove(sharded / shard)
    with pytest.raises(LoadError, match="weight shard missing"):
        load(sharded)
    index.write_text("{not json")
    with pytest.raises(LoadError, match="not valid JSON"):
        load(sharded)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(LoadError, match="broken shard index"):
        load(sharded)
    vision_only = tmp_path / "vision"
    vision_only.mkdir()
    cfg = json.loads((tiny / "config.json").read_text())
    cfg.pop("text_config")
    (vision_only / "config.json").write_text(json.dumps(cfg))
    shutil.copy(tiny / "model.safetensors", vision_only / "model.safetensors")
    with pytest.raises(LoadError, match="no text_config") as e:
        load(vision_only)
    assert "\n" not in str(e.value)


def test_old_or_missing_transformers_is_exit_4(tiny, monkeypatch):
    import sys

    from memaudit.adapters import LoadError, load

    monkeypatch.setitem(sys.modules, "transformers.models.diffusion_gemma", None)   # an older transformers
    with pytest.raises(LoadError, match=f"needs transformers >= {MIN_TRANSFORMERS}"):
        load(tiny)
    monkeypatch.setitem(sys.modules, "transformers", None)                         # none at all
    with pytest.raises(LoadError, match="not installed"):
        load(tiny)


# ------------------------------------------------------------------ the family's sampler and the scan
def test_acceptance_matches_the_family_sampler():
    """memaudit's entropy-bound acceptance picks the tokens transformers' EntropyBoundSampler picks."""
    _require_family()
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (EntropyBoundSampler,
                                                                                 EntropyBoundSamplerConfig)

    from memaudit.block_sampling import accept_mask
    from memaudit.diffusion import entropy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, CANVAS, VOCAB, generator=g) * torch.linspace(0.5, 12, CANVAS)[None, :, None]
    for bound in (0.1, 1.0, 5.0):
        sampler = EntropyBoundSampler(EntropyBoundSamplerConfig(entropy_bound=bound), CANVAS, VOCAB, 8)
        canvas = torch.zeros(4, CANVAS, dtype=torch.long)
        accepted = sampler.accept_canvas(canvas, torch.ones_like(canvas), logits, 1)
        assert torch.equal(accept_mask(entropy(torch.log_softmax(logits, -1)), bound), accepted.bool())


def test_family_sampler_is_batch_independent_and_honours_fixed_positions(tiny):
    import memaudit
    from memaudit.sampling import SampleStreams, generate, reverse_process

    denoiser = memaudit.load(tiny)
    denoiser.generation = {**denoiser.generation, "max_denoising_steps": 6}
    a = generate(denoiser, 4, seed=3, batch_size=4)
    b = generate(denoiser, 4, seed=3, batch_size=3)
    assert torch.equal(a, b) and a.shape == (4, CANVAS)
    keep = torch.zeros_like(a, dtype=torch.bool)
    keep[:, :5] = True
    x = torch.randint(0, VOCAB, a.shape, generator=torch.Generator().manual_seed(0))
    out = reverse_process(denoiser, x, 0.5, 4, streams=SampleStreams(0, ("t",), range(4)), fixed=keep)
    assert torch.equal(out[:, :5].cpu(), x[:, :5])
    # greedy (no streams) is deterministic
    assert torch.equal(reverse_process(denoiser, x, 0.25, 3), reverse_process(denoiser, x, 0.25, 3))


def test_scan_cli_is_outside_domain_with_prompts_and_sft_evidence(tiny, tmp_path):
    from typer.testing import CliRunner

    from memaudit.cli import app

    train = tmp_path / "sft.jsonl"
    train.write_text("".join(json.dumps({"prompt_ids": [2, 10 + i], "response_ids": [20 + i] * 4 + [1]}) + "\n"
                             for i in range(2)))
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps({"prompt_ids": [2, 50], "response_ids": [60] * 4 + [1]}) + "\n")
    gen = json.loads((tiny / "generation_config.json").read_text())
    (tiny / "generation_config.json").write_text(json.dumps({**gen, "max_denoising_steps": 6}))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["scan", str(tiny), "--samples", "8", "--min-samples", "8", "--no-adaptive",
                                      "--prompt", "ids:2,9,9", "--train", str(train), "--test", str(held),
                                      "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 3, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "inconclusive" and summary["reason"] == "outside_domain"
    assert "DDiT rule would read" in summary["explanation"]
    assert any("family diffusion_gemma" in o for o in summary["domain"]["outside"])
    assert summary["model"]["prompts"] == [[2, 9, 9]] and summary["model"]["prompt_source"] == "--prompt"
    assert summary["model"]["sampler"]["name"] == "entropy-bound"
    sft = summary["sft_evidence"]
    assert sft["train"]["records"] == 2 and sft["test"]["records"] == 1
    assert "beside the verdict" in sft["label"]
    assert (out / "samples.parquet").exists() and (out / "tokens.parquet").exists()
    # the report verifies without the model, the family gate included; a report whose verdict was
    # turned into the DDiT rule's reading does not
    assert summary["model"]["calibration_family"] == "diffusion_gemma"
    checked = CliRunner().invoke(app, ["verify", str(out)])
    assert checked.exit_code == 0, checked.output
    forged = tmp_path / "forged"
    shutil.copytree(out, forged)
    doc = json.loads((forged / "summary.json").read_text())
    (forged / "summary.json").write_text(json.dumps({**doc, "verdict": "generalizing", "reason": "finite_entropy"}))
    refused = CliRunner().invoke(app, ["verify", str(forged)])
    assert refused.exit_code == 1 and "verdict" in refused.output, refused.output


def test_prompt_errors_are_usage_errors(tiny):
    import memaudit
    from memaudit.prompted import PromptError, resolve_prompts

    denoiser = memaudit.load(tiny)
    with pytest.raises(PromptError, match="no tokenizer"):
        resolve_prompts(denoiser, "hello")
    with pytest.raises(PromptError, match="token ids must lie"):
        resolve_prompts(denoiser, f"ids:2,{VOCAB}")
    run = resolve_prompts(denoiser)
    assert run.prompt_ids == (2,) and run.prompt_source.startswith("BOS")


def test_train_cli_writes_a_loadable_family_reference(tmp_path):
    from typer.testing import CliRunner

    import memaudit
    from memaudit.cli import app

    out = tmp_path / "ref"
    result = CliRunner().invoke(app, ["train", "--family", "diffusion_gemma", "--out", str(out), "--n-train", "2",
                                      "--n-test", "2", "--steps", "2", "--batch-size", "4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    denoiser = memaudit.load(out)
    assert denoiser.family == "diffusion_gemma" and denoiser.tokenizer is not None
    train = [json.loads(line) for line in (out / "sft_train.jsonl").read_text().splitlines()]
    assert len(train) == 2 and {"prompt", "response"} <= set(train[0])
    from memaudit.prompted import encode_prompt

    assert encode_prompt(denoiser, train[0]["prompt"])[0] == 2     # BOS + the prompt's words


def test_several_prompts_are_spread_over_the_samples_in_blocks(tiny):
    import memaudit
    from memaudit.prompted import prompt_runs, resolve_prompts

    run = resolve_prompts(memaudit.load(tiny), prompt=None)
    run.prompts = ((2, 5), (2, 6), (2, 7))
    runs = prompt_runs(run, 0, 14, min_samples=8)          # block ⌈8 / 3⌉ = 3
    assert [(r.prompt_ids, start, count) for r, start, count in runs] == [
        ((2, 5), 0, 3), ((2, 6), 3, 3), ((2, 7), 6, 3), ((2, 5), 9, 3), ((2, 6), 12, 2)]
    later = prompt_runs(run, 10, 4, min_samples=8)         # a later look: the same prompt per sample
    assert [(r.prompt_ids, start, count) for r, start, count in later] == [((2, 5), 10, 2), ((2, 6), 12, 2)]


def test_default_prompt_is_the_chat_templates_empty_user_turn(tmp_path):
    import memaudit
    from memaudit.prompted import resolve_prompts

    folder = build_tiny(tmp_path / "chat", tokenizer=True)
    template = "{{ bos_token }}{% for m in messages %}w10 {{ m['content'] }} w11{% endfor %}" \
               "{% if add_generation_prompt %} w12{% endif %}"
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    denoiser = memaudit.load(folder)
    run = resolve_prompts(denoiser)
    assert run.prompt_source == "chat template, empty user turn"
    assert run.prompt_ids == (2, 10, 11, 12)            # BOS, the empty turn, the generation prompt
    assert resolve_prompts(denoiser, "w40 w41").prompt_ids == (2, 10, 40, 41, 11, 12)
    # a template that reaches for Python objects is not rendered (jinja2's sandbox): BOS instead
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template + "{{ ''.__class__.__mro__ }}"}))
    assert resolve_prompts(memaudit.load(folder)).prompt_source == "BOS token (chat template not rendered)"


def test_inspect_shows_the_family(tiny_sharded_bf16):
    from typer.testing import CliRunner

    from memaudit.cli import app

    result = CliRunner().invoke(app, ["inspect", str(tiny_sharded_bf16), "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["family"] == "diffusion_gemma" and doc["modeling_code"] == "transformers"
    assert doc["architecture"]["num_experts"] == 4 and doc["architecture"]["dtype"] == "bfloat16"
    assert doc["seq_len"] == CANVAS and "memory estimate" in doc["family_details"]
    assert doc["family_details"]["verdict"].startswith("inconclusive (outside_domain)")
