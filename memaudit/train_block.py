"""Reference trainer for tiny DiffusionGemma-architecture models (issue 27), with the family's
objective, so the probe can be checked on references of the family whose regime is known.

The objective (as DiffusionGemma fine-tuning is described: block diffusion with uniform noise and
self-conditioning; written here from that description, no trainer code copied): for each prompt →
response pair the canvas is the response, an EOS, and padding to the canvas length. A corruption level
t ~ U(0, 1) is drawn per example and each canvas token is independently replaced, with probability t,
by a token drawn uniformly from the vocabulary. The network reads the prompt (encoder) and the
corrupted canvas (decoder) and is trained with the cross-entropy of the clean canvas x0 at every
canvas position. Self-conditioning: for half of the examples of each (randomly drawn) batch, a first pass without
gradient produces logits that are fed back as the decoder's self-conditioning input of the trained
pass (the other half gets none, as at the first denoising step).

Data (built in, seeded): `qa` — questions and answers of a small grammar: the prompt names a
topic ("tell me about the river"), the response is one sentence of the grammar about it, drawn once
per pair with the data seed; training on few pairs stores their responses (memorizing), on many it
learns the grammar (the responses to held-out prompts are new sentences). The vocabulary is the
grammar's words (a WordLevel tokenizer saved beside the model), so reports decode to text.

The result is saved with transformers' own save_pretrained (config.json, model.safetensors,
generation_config.json) plus tokenizer.json and memaudit_sft.json (the seeded pairs: training and
held-out records, which `scan --train/--test` read as prompt → response JSON lines).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .errors import UsageError

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]          # ids 0, 1, 2, 3 (DiffusionGemma's pad/eos/bos)
TOPICS = ["river", "forest", "city", "storm", "garden", "market", "mountain", "harbor", "library", "bridge",
          "desert", "island", "valley", "castle", "village", "meadow"]
SUBJECTS = ["the old man", "a small child", "the farmer", "my sister", "the traveler", "a quiet dog",
            "the teacher", "our neighbor"]
VERBS = ["walks to", "dreams of", "paints", "remembers", "sings about", "runs past", "visits", "watches"]
ADJECTIVES = ["green", "silent", "distant", "bright", "ancient", "busy", "cold", "golden"]
TIMES = ["at dawn", "every day", "in winter", "at night", "after rain", "on sunday"]


class BlockTrainError(UsageError):
    """Bad settings for the DiffusionGemma reference trainer (exit 2)."""


def vocabulary() -> list[str]:
    words = {w for phrase in SUBJECTS + VERBS + ADJECTIVES + TIMES for w in phrase.split()}
    words |= set(TOPICS) | {"tell", "me", "about", "the", "."}
    return SPECIALS + sorted(words)


def qa_pairs(n: int, seed: int) -> list[dict]:
    """n distinct seeded (prompt, response) pairs of the grammar. A prompt names a topic and a time
    ("tell me about the river at dawn"); the response is one sentence about that topic (one of
    8 × 8 × 8 per prompt). The 96 prompts come in seeded order; past 96 pairs they come round again
    with new responses, so a large set teaches the grammar rather than one answer per prompt."""
    rng = random.Random(seed)
    prompts = [(topic, when) for topic in TOPICS for when in TIMES]
    rng.shuffle(prompts)
    pairs, seen = [], set()
    while len(pairs) < n:
        topic, when = prompts[len(pairs) % len(prompts)]
        prompt = f"tell me about the {topic} {when}"
        response = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} {topic} {when} ."
        if (prompt, response) in seen:
            continue
        seen.add((prompt, response))
        pairs.append({"prompt": prompt, "response": response})
    return pairs


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


@dataclass
class BlockTrainConfig:
    n_train: int = 8
    n_test: int = 8
    steps: int = 400
    batch_size: int = 16
    lr: float = 3e-3
    hidden_size: int = 64
    layers: int = 2
    experts: int = 4
    canvas: int = 16
    self_conditioning: float = 0.5
    seed: int = 0
    data_seed: int = 0


def build_model(cfg: BlockTrainConfig, vocab_size: int):
    from .adapters.diffusion_gemma import transformers_classes

    transformers_classes()   # LoadError with the install hint when transformers lacks the family
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, DiffusionGemmaTextConfig
    from transformers import Gemma4VisionConfig

    vision = Gemma4VisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=1,
                                num_key_value_heads=1, head_dim=8, position_embedding_size=16)
    layer_types = ["sliding_attention"] * (cfg.layers - 1) + ["full_attention"]
    heads = max(1, cfg.hidden_size // 32)
    text = DiffusionGemmaTextConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size,
                                    intermediate_size=2 * cfg.hidden_size, num_hidden_layers=cfg.layers,
                                    num_attention_heads=heads, num_key_value_heads=1, head_dim=32, global_head_dim=32,
                                    num_experts=cfg.experts, top_k_experts=2, moe_intermediate_size=cfg.hidden_size,
                                    sliding_window=64, max_position_embeddings=256, layer_types=layer_types)
    config = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=cfg.canvas)
    torch.manual_seed(cfg.seed)
    return DiffusionGemmaForBlockDiffusion(config)


def encode_pairs(pairs: list[dict], tok, canvas: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompts [N, P], canvases [N, canvas]): BOS + prompt words; response + EOS + padding."""
    prompts, canvases = [], []
    for pair in pairs:
        p = [2] + tok.encode(pair["prompt"]).ids
        r = tok.encode(pair["response"]).ids + [1]
        if len(r) > canvas:
            raise BlockTrainError(f"a response of {len(r)} tokens does not fit a canvas of {canvas}")
        prompts.append(p)
        canvases.append(r + [0] * (canvas - len(r)))
    if len({len(p) for p in prompts}) != 1:
        raise BlockTrainError("the grammar's prompts must share one length")
    return torch.tensor(prompts), torch.tensor(canvases)


def train_reference(cfg: BlockTrainConfig, out: str | Path, log=None) -> dict:
    """Train and save one reference; → a summary dict (loss, seconds, files)."""
    out = Path(out)
    tok = make_tokenizer()
    vocab = tok.get_vocab_size()
    pairs = qa_pairs(cfg.n_train + cfg.n_test, cfg.data_seed)
    train_pairs, test_pairs = pairs[:cfg.n_train], pairs[cfg.n_train:]
    prompts, canvases = encode_pairs(train_pairs, tok, cfg.canvas)
    model = build_model(cfg, vocab)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    started, losses = time.perf_counter(), []
    for step in range(cfg.steps):
        idx = torch.randint(0, len(train_pairs), (cfg.batch_size,), generator=g)
        p, x0 = prompts[idx], canvases[idx]
        t = torch.rand(cfg.batch_size, 1, generator=g)
        replace = torch.rand(x0.shape, generator=g) < t
        xt = torch.where(replace, torch.randint(0, vocab, x0.shape, generator=g), x0)
        # self-conditioning on the first `k` examples (the batch is already in random order): their
        # first pass, without gradient, is fed back; the rest get none (as at the first step)
        k = int(round(cfg.self_conditioning * cfg.batch_size))
        parts = []
        if k > 0:
            with torch.no_grad():
                sc = model(input_ids=p[:k], decoder_input_ids=xt[:k]).logits.detach()
            parts.append(model(input_ids=p[:k], decoder_input_ids=xt[:k], self_conditioning_logits=sc).logits)
        if k < cfg.batch_size:
            parts.append(model(input_ids=p[k:], decoder_input_ids=xt[k:]).logits)
        logits = torch.cat(parts)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab).float(), x0.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / 50)
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None and (step + 1) % 100 == 0:
            log(f"step {step + 1}/{cfg.steps} loss {sum(losses[-100:]) / len(losses[-100:]):.4f}")
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save(str(out / "tokenizer.json"))
    (out / "memaudit_sft.json").write_text(json.dumps({"train": train_pairs, "test": test_pairs,
                                                       "config": asdict(cfg)}, indent=1))
    for split, rows in (("train", train_pairs), ("test", test_pairs)):
        (out / f"sft_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tail = losses[-50:]
    return {"out": str(out), "final_loss": sum(tail) / len(tail), "seconds": time.perf_counter() - started,
            "n_train": cfg.n_train, "n_test": cfg.n_test, "vocab_size": vocab}
