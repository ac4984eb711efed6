"""The reference DDiT, the Denoiser contract and the native checkpoint format."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import memaudit
from memaudit.adapters import LoadError
from memaudit.adapters.native import save_checkpoint
from memaudit.diffusion import LogLinearSchedule
from memaudit.model import DDiT, DDiTConfig, preset_config

DUO_KEYS_BLOCK = {"norm1.weight", "attn_qkv.weight", "attn_out.weight", "norm2.weight", "mlp.0.weight",
                  "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "adaLN_modulation.weight",
                  "adaLN_modulation.bias"}


def small_config(**kw):
    return DDiTConfig(vocab_size=11, seq_len=7, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=4, **kw)


def randomize(model: DDiT, seed: int = 0) -> DDiT:
    """Zero-initialised adaLN/output layers would hide bugs: give every weight a random value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def test_parameter_names_match_duo_udlm_backbone():
    keys = set(DDiT(small_config()).state_dict())
    expected = {"vocab_embed.embedding", "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias",
                "sigma_map.mlp.2.weight", "sigma_map.mlp.2.bias", "rotary_emb.inv_freq",
                "output_layer.norm_final.weight", "output_layer.linear.weight", "output_layer.linear.bias",
                "output_layer.adaLN_modulation.weight", "output_layer.adaLN_modulation.bias"}
    expected |= {f"blocks.{i}.{k}" for i in range(2) for k in DUO_KEYS_BLOCK}
    assert keys == expected


def test_fresh_model_predicts_uniform_and_shapes():
    model = DDiT(small_config())
    logits = model(torch.randint(0, 11, (3, 7)), torch.rand(3))
    assert logits.shape == (3, 7, 11) and logits.dtype == torch.float32
    # zero-initialised output layer: uniform predictions, entropy = ln V
    assert torch.allclose(logits, torch.zeros_like(logits))


def test_model_is_bidirectional_and_time_conditioned():
    model = randomize(DDiT(small_config()))
    x = torch.randint(0, 11, (1, 7))
    sigma = torch.tensor([0.5])
    base = model(x, sigma)
    x2 = x.clone()
    x2[0, -1] = (x2[0, -1] + 1) % 11
    # changing the last token changes the prediction at the first position (no causal mask)
    assert not torch.allclose(model(x2, sigma)[0, 0], base[0, 0])
    assert not torch.allclose(model(x, torch.tensor([2.0])), base)
    off = randomize(DDiT(small_config(time_conditioning=False)))
    assert torch.allclose(off(x, torch.tensor([0.1])), off(x, torch.tensor([3.0])))


def test_presets_build():
    cfg = preset_config("tiny", vocab_size=100, seq_len=16)
    assert (cfg.hidden_size, cfg.n_blocks, cfg.n_heads) == (256, 8, 8)
    with pytest.raises(ValueError):
        preset_config("huge", 10, 10)


def write_native(tmp_path, model, tokenizer=None, ema=True):
    ema_state = {k: v + 1e-3 for k, v in model.named_parameters()} if ema else None
    return save_checkpoint(tmp_path / "ckpt", model, {"schedule": LogLinearSchedule().to_dict(),
                                                      "training": {"steps_done": 0}},
                           ema_state=ema_state, tokenizer=tokenizer)


def test_native_round_trip_and_denoiser_contract(tmp_path):
    model = randomize(DDiT(small_config()))
    path = write_native(tmp_path, model)
    raw = memaudit.load(path, weights="raw")
    ema = memaudit.load(path)  # default: EMA when present
    assert ema.weights == "ema" and raw.weights == "raw"
    x = torch.randint(0, 11, (2, 7))
    t = torch.tensor([0.3, 0.9])
    log_probs = raw(x, t)
    assert log_probs.shape == (2, 7, 11) and log_probs.dtype == torch.float32
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 7), atol=1e-5)
    # the denoiser feeds σ_t = −log α_t to the network
    expected = torch.log_softmax(model(x, LogLinearSchedule().sigma(t)), -1)
    assert torch.allclose(log_probs, expected, atol=1e-6)
    assert not torch.allclose(ema(x, t), log_probs)
    assert raw.describe()["files"]["model.safetensors"]


def test_native_bad_inputs(tmp_path):
    model = randomize(DDiT(small_config()))
    path = write_native(tmp_path, model, ema=False)
    with pytest.raises(LoadError, match="no EMA"):
        memaudit.load(path, weights="ema")
    with pytest.raises(LoadError, match="no such file"):
        memaudit.load(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LoadError, match="not a recognised checkpoint"):
        memaudit.load(empty)

    weights = path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(LoadError, match="truncated"):
        memaudit.load(path)
    weights.write_bytes(good)

    state = load_file(str(weights))
    state["blocks.0.mlp.0.bias"][0] = float("nan")
    save_file(state, str(weights))
    with pytest.raises(LoadError, match="NaN"):
        memaudit.load(path)
    weights.write_bytes(good)

    config = json.loads((path / "config.json").read_text())
    config["model"]["vocab_size"] = 12
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(LoadError, match="vocabulary mismatch"):
        memaudit.load(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(LoadError, match="not valid JSON"):
        memaudit.load(path)
