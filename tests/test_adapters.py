"""Foreign checkpoints (Duo, UDLM, UNI-D2, SEDD, GIDD) built in their exact on-disk layouts, loaded by
memaudit and compared with an independent reference forward pass written here from the published
DDiT architecture (plain tensor ops over the state dict; memaudit.model is never called).

Lightning pickles name `omegaconf.*` and `transformers.*` classes. Neither package is needed: a
throwaway package of that name is put on sys.path only while *saving*, then removed from
sys.modules and sys.path, so loading proves memaudit never imports the classes a pickle names.
"""
from __future__ import annotations

import collections
import json
import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import memaudit
from memaudit.adapters import LoadError, UnsupportedCheckpoint

V, L, D, COND, H, NB = 40, 12, 32, 16, 4, 2
EPS = 1e-3
TIMES = torch.tensor([0.0, 0.35, 0.9])


# ---------------------------------------------------------------- the published DDiT, written out
def ddit_spec(vocab=V, d=D, cond=COND, n_blocks=NB, ratio=4):
    """Parameter names and shapes in the Duo/UDLM/SEDD module registration order (state-dict order)."""
    spec = [("vocab_embed.embedding", (vocab, d)), ("sigma_map.mlp.0.weight", (cond, 256)),
            ("sigma_map.mlp.0.bias", (cond,)), ("sigma_map.mlp.2.weight", (cond, cond)),
            ("sigma_map.mlp.2.bias", (cond,)), ("rotary_emb.inv_freq", None)]
    for i in range(n_blocks):
        p = f"blocks.{i}."
        spec += [(p + "norm1.weight", (d,)), (p + "attn_qkv.weight", (3 * d, d)), (p + "attn_out.weight", (d, d)),
                 (p + "norm2.weight", (d,)), (p + "mlp.0.weight", (ratio * d, d)), (p + "mlp.0.bias", (ratio * d,)),
                 (p + "mlp.2.weight", (d, ratio * d)), (p + "mlp.2.bias", (d,)),
                 (p + "adaLN_modulation.weight", (6 * d, cond)), (p + "adaLN_modulation.bias", (6 * d,))]
    spec += [("output_layer.norm_final.weight", (d,)), ("output_layer.linear.weight", (vocab, d)),
             ("output_layer.linear.bias", (vocab,)), ("output_layer.adaLN_modulation.weight", (2 * d, cond)),
             ("output_layer.adaLN_modulation.bias", (2 * d,))]
    return spec


def random_state(seed=0, vocab=V, d=D, cond=COND, n_blocks=NB, n_heads=H):
    """Random, non-zero weights (adaLN and output layers included) in state-dict order."""
    g = torch.Generator().manual_seed(seed)
    sd = collections.OrderedDict()
    hd = d // n_heads
    for name, shape in ddit_spec(vocab, d, cond, n_blocks):
        if shape is None:
            sd[name] = 1.0 / (10_000 ** (torch.arange(0, hd, 2).float() / hd))
        elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("norm_final.weight"):
            sd[name] = 1 + 0.2 * torch.randn(shape, generator=g)
        elif name == "vocab_embed.embedding":
            sd[name] = torch.randn(shape, generator=g)
        elif name.endswith("bias"):
            sd[name] = 0.2 * torch.randn(shape, generator=g)
        else:
            sd[name] = torch.randn(shape, generator=g) * (0.8 / math.sqrt(shape[1]))
    return sd


def _ln(x, w):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w


def _silu(x):
    return x * torch.sigmoid(x)


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def reference_logits(sd, tokens, time_in, n_heads=H):
    """DDiT forward from the published architecture (Duo models/dit.py, UDLM, SEDD transformer.py)."""
    x = sd["vocab_embed.embedding"][tokens]
    B, T, d = x.shape
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = time_in.float()[:, None] * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    c = _silu(temb @ sd["sigma_map.mlp.0.weight"].T + sd["sigma_map.mlp.0.bias"])
    c = _silu(c @ sd["sigma_map.mlp.2.weight"].T + sd["sigma_map.mlp.2.bias"])
    hd = d // n_heads
    inv = 1.0 / (10_000 ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.outer(torch.arange(T, dtype=torch.float32), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rot(z):  # z [B, T, H, hd]; non-interleaved rotate_half
        z1, z2 = z[..., : hd // 2], z[..., hd // 2:]
        return z * cos[None, :, None, :] + torch.cat([-z2, z1], -1) * sin[None, :, None, :]

    n = 0
    while f"blocks.{n}.norm1.weight" in sd:
        p = f"blocks.{n}."
        mod = c @ sd[p + "adaLN_modulation.weight"].T + sd[p + "adaLN_modulation.bias"]
        sh1, sc1, g1, sh2, sc2, g2 = [m[:, None, :] for m in mod.split(d, dim=-1)]
        h = _ln(x, sd[p + "norm1.weight"]) * (1 + sc1) + sh1
        qkv = (h @ sd[p + "attn_qkv.weight"].T).view(B, T, 3, n_heads, hd)
        q, k, v = rot(qkv[:, :, 0]), rot(qkv[:, :, 1]), qkv[:, :, 2]
        att = torch.softmax(torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(hd), dim=-1)
        o = torch.einsum("bhlm,bmhd->blhd", att, v).reshape(B, T, d)
        x = x + g1 * (o @ sd[p + "attn_out.weight"].T)
        h = _ln(x, sd[p + "norm2.weight"]) * (1 + sc2) + sh2
        m = _gelu_tanh(h @ sd[p + "mlp.0.weight"].T + sd[p + "mlp.0.bias"]) @ sd[p + "mlp.2.weight"].T + sd[p + "mlp.2.bias"]
        x = x + g2 * m
        n += 1
    fmod = c @ sd["output_layer.adaLN_modulation.weight"].T + sd["output_layer.adaLN_modulation.bias"]
    shift, scale = fmod[:, None, :d], fmod[:, None, d:]
    return (_ln(x, sd["output_layer.norm_final.weight"]) * (1 + scale) + shift) @ sd["output_layer.linear.weight"].T \
        + sd["output_layer.linear.bias"]


def loglinear_sigma(t, eps=EPS):
    return -torch.log1p(-(1 - eps) * t)


def tokens_for(seed=1, vocab=V, batch=3):
    return torch.randint(0, vocab, (batch, L), generator=torch.Generator().manual_seed(seed))


def assert_close(got, ref, tol=1e-4):
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert got.dtype == torch.float32
    err = (got - ref).abs().max().item()
    assert err < tol, f"max abs difference {err}"


# ------------------------------------------------- throwaway packages that pickles can name (save only)
FAKE_PACKAGES = {
    "omegaconf/__init__.py": "",
    "omegaconf/base.py": '''
        import collections, dataclasses, typing

        @dataclasses.dataclass
        class Metadata:
            ref_type: typing.Any
            object_type: typing.Any
            optional: bool
            key: typing.Any
            flags: dict = None
            flags_root: bool = False
            resolver_cache: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(dict))

        @dataclasses.dataclass
        class ContainerMetadata(Metadata):
            key_type: typing.Any = None
            element_type: typing.Any = None
    ''',
    "omegaconf/nodes.py": '''
        import typing
        from .base import Metadata

        class AnyNode:
            def __init__(self, value, key, parent):
                self.__dict__.update(_metadata=Metadata(typing.Any, None, True, key, {}), _parent=parent, _val=value)
    ''',
    "omegaconf/dictconfig.py": '''
        import typing
        from .base import ContainerMetadata
        from .nodes import AnyNode

        def wrap(value, key, parent):
            from .listconfig import ListConfig
            if isinstance(value, dict):
                return DictConfig(value, key, parent)
            if isinstance(value, list):
                return ListConfig(value, key, parent)
            return AnyNode(value, key, parent)

        class DictConfig:
            """Pickles like omegaconf 2.x: NEWOBJ + BUILD of {_metadata, _parent, _content}."""
            def __init__(self, content, key=None, parent=None):
                meta = ContainerMetadata(typing.Any, dict, True, key, {}, key_type=typing.Any, element_type=typing.Any)
                self.__dict__.update(_metadata=meta, _parent=parent, _content=None)
                self.__dict__["_content"] = {k: wrap(v, k, self) for k, v in content.items()}
    ''',
    "omegaconf/listconfig.py": '''
        import typing
        from .base import ContainerMetadata

        class ListConfig:
            def __init__(self, content, key=None, parent=None):
                from .dictconfig import wrap
                meta = ContainerMetadata(typing.Any, list, True, key, {}, key_type=int, element_type=typing.Any)
                self.__dict__.update(_metadata=meta, _parent=parent, _content=None)
                self.__dict__["_content"] = [wrap(v, i, self) for i, v in enumerate(content)]
    ''',
    "transformers/__init__.py": "",
    "transformers/tokenization_utils_fast.py": '''
        class PreTrainedTokenizerFast:
            def __init__(self, tokenizer, **kwargs):
                self._tokenizer = tokenizer
                self.init_kwargs = dict(kwargs)
                self.name_or_path = "fake"
                self.model_input_names = ["input_ids", "attention_mask"]
                self.padding_side = "right"
    ''',
    "transformers/models/__init__.py": "",
    "transformers/models/bert/__init__.py": "",
    "transformers/models/bert/tokenization_bert.py": '''
        import collections

        class BasicTokenizer:
            def __init__(self, do_lower_case=True):
                self.do_lower_case = do_lower_case
                self.never_split = set()

        class WordpieceTokenizer:
            def __init__(self, vocab, unk_token):
                self.vocab, self.unk_token, self.max_input_chars_per_word = vocab, unk_token, 100

        class BertTokenizer:
            def __init__(self, tokens):
                self.vocab = collections.OrderedDict((t, i) for i, t in enumerate(tokens))
                self.ids_to_tokens = collections.OrderedDict((i, t) for t, i in self.vocab.items())
                self.do_basic_tokenize = True
                self.basic_tokenizer = BasicTokenizer(True)
                self.wordpiece_tokenizer = WordpieceTokenizer(self.vocab, "[UNK]")
                self.init_kwargs = {"do_lower_case": True}
    ''',
    "evilpayload/__init__.py": '''
        import builtins, os, subprocess

        class Payload:
            """Unpickling this with pickle/torch.load runs `func(arg)`."""
            def __init__(self, func, arg):
                self.func, self.arg = func, arg
            def __reduce__(self):
                return (self.func, (self.arg,))
    ''',
}


class FakePackages:
    """Context manager: importable fake omegaconf/transformers while saving, gone afterwards."""

    def __init__(self, root: Path):
        self.root = root / "fakepkgs"
        for rel, src in FAKE_PACKAGES.items():
            f = self.root / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(textwrap.dedent(src))

    NAMES = ("omegaconf", "transformers", "evilpayload")
    stashed: dict = {}  # the real modules the latest __enter__ set aside

    def __enter__(self):
        # the real packages, when an earlier test imported them (transformers reads tokenizer
        # folders), step aside while the fakes are in use and come back afterwards
        FakePackages.stashed = {name: sys.modules.pop(name) for name in list(sys.modules)
                                if name.split(".")[0] in self.NAMES}
        sys.path.insert(0, str(self.root))
        return self

    def __exit__(self, *exc):
        sys.path.remove(str(self.root))
        for name in list(sys.modules):
            if name.split(".")[0] in self.NAMES:
                del sys.modules[name]
        sys.modules.update(FakePackages.stashed)


def real_fast_tokenizer(n_tokens):
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[UNK]"] + [f"w{i}" for i in range(1, n_tokens - 1)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken("[PAD]", special=True)])  # like Duo adding [PAD] to GPT-2
    return tok


def bert_tokens(n):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["hello", "world", "the", "cat", "##s", "sat"]
    return specials + words + [f"tok{i}" for i in range(n - len(specials) - len(words))]


def duo_config(**over):
    cfg = {
        "mode": "train", "seed": 1,
        "algo": {"name": "duo", "backbone": "dit", "parameterization": "mean", "time_conditioning": True, "T": 0,
                 "subs_masking": False, "causal_attention": False, "loss_type": "elbo",
                 "curriculum": {"mode": "simple", "gamma_min": -3.5, "gamma_max": -1.75,
                                "integral_cache_path": "${hydra:runtime.cwd}/integral/gpt2.pkl"}},
        "model": {"name": "tiny", "type": "ddit", "hidden_size": D, "cond_dim": COND, "length": "${data.len}",
                  "n_blocks": NB, "n_heads": H, "scale_by_sigma": True, "dropout": 0.1},
        "data": {"len": L, "tokenizer_name_or_path": "fake"},
        "noise": {"type": "log-linear", "eps": EPS},
        "loader": {"num_workers": "${eval:\"len(__import__('os').sched_getaffinity(0))\"}"},
        "training": {"ema": 0.9999},
        "wandb": {"tags": ["${noise.type}", "x"]},
    }
    for path, value in over.items():
        node = cfg
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return cfg


DELETE = object()


def lightning_ckpt(sd_prefixed, config, tokenizer=None, ema=None, hp_extra=None, extra=None):
    """A dict shaped like Lightning's ModelCheckpoint output (see memaudit/adapters/lightning.py)."""
    from omegaconf.dictconfig import DictConfig  # the throwaway package

    hp = {"config": DictConfig(config), "tokenizer": tokenizer}
    hp.update(hp_extra or {})
    n_params = sum(1 for k in sd_prefixed if not k.endswith("inv_freq"))
    ckpt = {
        "epoch": 0, "global_step": 7, "pytorch-lightning_version": "2.6.0",
        "state_dict": sd_prefixed,
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 0}},
                               "epoch_loop.batch_progress": {"current": {"completed": 7}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val/nll'}": {"best_model_score": torch.tensor(3.5),
                                                               "best_model_path": "/x/best.ckpt"}},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.zeros(3)}},
                              "param_groups": [{"lr": 3e-4, "betas": (0.9, 0.999), "params": list(range(n_params))}]}],
        "lr_schedulers": [{"last_epoch": 7, "lr_lambdas": [None], "_last_lr": [3e-4]}],
        "sampler": {"random_state": torch.ByteTensor(16).zero_()},
        "hyper_parameters": hp,
        "hparams_name": "kwargs",
    }
    if ema is not None:
        ckpt["ema"] = ema
    ckpt.update(extra or {})
    return ckpt


def prefixed(sd, prefix="backbone."):
    return collections.OrderedDict((prefix + k, v) for k, v in sd.items())


def ema_of(sd, seed=5, extra=()):
    g = torch.Generator().manual_seed(seed)
    shadow = [v + 0.05 * torch.randn(v.shape, generator=g) for k, v in sd.items() if not k.endswith("inv_freq")]
    named = collections.OrderedDict()
    it = iter(shadow)
    for k, v in sd.items():
        named[k] = v if k.endswith("inv_freq") else next(it)
    return {"decay": 0.9999, "num_updates": 7, "shadow_params": shadow + list(extra)}, named


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    return FakePackages(tmp_path_factory.mktemp("fakes"))


def assert_never_imported():
    """Neither the fake packages nor the real ones were imported (a real one an earlier test had
    imported before the fakes were last used may be there, the same module)."""
    for name in FakePackages.NAMES:
        module = sys.modules.get(name)
        assert module is None or module is FakePackages.stashed.get(name), f"{name} was imported"


# -------------------------------------------------------------------------------------- Duo .ckpt
@pytest.fixture(scope="module")
def duo_ckpt(tmp_path_factory, fakes):
    d = tmp_path_factory.mktemp("duo")
    sd = random_state(seed=0)
    ema, ema_named = ema_of(sd)
    with fakes:
        from transformers.tokenization_utils_fast import PreTrainedTokenizerFast
        tok = PreTrainedTokenizerFast(real_fast_tokenizer(V), pad_token="[PAD]")
        ckpt = lightning_ckpt(prefixed(sd), duo_config(), tokenizer=tok, ema=ema, hp_extra={"vocab_size": None})
        torch.save(ckpt, d / "last.ckpt")
    assert_never_imported()
    return d / "last.ckpt", sd, ema_named


def test_duo_ckpt_matches_reference_raw_by_default(duo_ckpt):
    path, sd, _ = duo_ckpt
    den = memaudit.load(path)
    assert_never_imported()
    assert den.family == "duo" and den.weights == "raw" and den.time_input == "sigma"
    assert den.vocab_size == V and den.seq_len == L
    assert den.provenance["ema_available"] is True and den.provenance["weights_default"] == "raw"
    x = tokens_for()
    ref = torch.log_softmax(reference_logits(sd, x, loglinear_sigma(TIMES)), -1)
    assert_close(den(x, TIMES), ref)


def test_duo_ckpt_ema_weights_follow_parameter_order(duo_ckpt):
    path, _, ema_named = duo_ckpt
    den = memaudit.load(path, weights="ema")
    assert den.weights == "ema"
    x = tokens_for(seed=2)
    ref = torch.log_softmax(reference_logits(ema_named, x, loglinear_sigma(TIMES)), -1)
    assert_close(den(x, TIMES), ref)


def test_duo_ckpt_tokenizer_recovered_from_pickled_fast_tokenizer(duo_ckpt):
    den = memaudit.load(duo_ckpt[0])
    assert den.tokenizer is not None
    assert den.tokenizer.get_vocab_size() == V
    assert den.tokenizer.token_to_id("[PAD]") == V - 1
    assert den.decode([1, 2]) == "w1 w2"


def test_duo_config_interpolations_resolved_but_resolvers_never_run(duo_ckpt):
    den = memaudit.load(duo_ckpt[0])
    assert den.config["model"]["length"] == L
    assert den.config["wandb"]["tags"][0] == "log-linear"
    assert den.config["loader"]["num_workers"].startswith("${eval:")  # left as text, never evaluated


def test_duo_cosine_schedule(tmp_path, fakes):
    sd = random_state(seed=3)
    with fakes:
        torch.save(lightning_ckpt(prefixed(sd), duo_config(**{"noise.type": "cosine"})), tmp_path / "c.ckpt")
    den = memaudit.load(tmp_path / "c.ckpt")
    t = (1 - EPS) * TIMES
    sigma = -torch.log(1 - torch.cos(math.pi / 2 * (1 - t)))  # Duo trainer_base.Cosine
    x = tokens_for(seed=3)
    assert_close(den(x, TIMES), torch.log_softmax(reference_logits(sd, x, sigma), -1))


# ------------------------------------------------------------------------------------ UDLM .ckpt
def udlm_config(**over):
    cfg = {"mode": "train", "diffusion": "uniform", "backbone": "dit", "parameterization": "d3pm",
           "time_conditioning": True, "subs_masking": False, "zero_recon_loss": True, "T": 0, "is_vision": False,
           "model": {"name": "small", "type": "ddit", "hidden_size": D, "cond_dim": COND, "length": L,
                     "n_blocks": NB, "n_heads": H, "scale_by_sigma": True, "dropout": 0.1},
           "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
           "training": {"ema": 0.9999, "guidance": None}}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def udlm_ckpt(tmp_path_factory, fakes):
    d = tmp_path_factory.mktemp("udlm")
    sd = random_state(seed=10)
    ema, _ = ema_of(sd)
    with fakes:
        from transformers.models.bert.tokenization_bert import BertTokenizer
        torch.save(lightning_ckpt(prefixed(sd), udlm_config(), tokenizer=BertTokenizer(bert_tokens(V)), ema=ema),
                   d / "udlm.ckpt")
    assert_never_imported()
    return d / "udlm.ckpt", sd


def test_udlm_ckpt_matches_reference(udlm_ckpt):
    path, sd = udlm_ckpt
    den = memaudit.load(path)
    assert den.family == "udlm" and den.time_input == "sigma"
    x = tokens_for(seed=4)
    ref = torch.log_softmax(reference_logits(sd, x, loglinear_sigma(TIMES)), -1)
    assert_close(den(x, TIMES), ref)


def test_udlm_slow_bert_tokenizer_rebuilt_as_wordpiece(udlm_ckpt):
    den = memaudit.load(udlm_ckpt[0])
    tok = den.tokenizer
    assert tok is not None and tok.get_vocab_size() == V
    ids = tok.encode("Hello world cats").ids
    vocab = bert_tokens(V)
    assert [vocab[i] for i in ids] == ["hello", "world", "cat", "##s"]


# ---------------------------------------------------------------------------------- UNI-D2 .ckpt
def unid2_config(tie=False):
    return {"algo": {"_target_": "discrete_diffusion.algorithms.udlm.UDLM", "name": "udlm",
                     "parameterization": "subs", "time_conditioning": False, "T": 0, "causal_attention": False},
            "model": {"_target_": "discrete_diffusion.models.dit.DIT", "name": "tiny", "type": "ddit",
                      "hidden_size": D, "cond_dim": COND, "length": L, "n_blocks": NB, "n_heads": H,
                      "scale_by_sigma": True, "dropout": 0.1, "tie_word_embeddings": tie},
            "noise": {"_target_": "discrete_diffusion.noise_schedules.LogLinear", "eps": EPS},
            "neg_infinity_mode": "large-finite", "block_size": "${model.length}"}


def test_unid2_udlm_time_conditioning_off_read_from_config(tmp_path, fakes):
    sd = random_state(seed=20)
    state = prefixed(sd)
    state.update(prefixed(sd, "model."))  # UNI-D2 registers the backbone twice: self.model = self.backbone
    ema, ema_named = ema_of(sd)
    with fakes:
        torch.save(lightning_ckpt(state, unid2_config(), ema=ema), tmp_path / "u.ckpt")
    den = memaudit.load(tmp_path / "u.ckpt")
    assert den.family == "uni-d2:udlm" and den.time_input == "none"
    assert den.model.config.time_conditioning is False
    x = tokens_for(seed=5)
    ref = torch.log_softmax(reference_logits(sd, x, torch.zeros(3)), -1)
    assert_close(den(x, TIMES), ref)
    den_ema = memaudit.load(tmp_path / "u.ckpt", weights="ema")
    assert_close(den_ema(x, TIMES), torch.log_softmax(reference_logits(ema_named, x, torch.zeros(3)), -1))


def test_unid2_tied_embeddings_ema_skips_the_duplicate(tmp_path, fakes):
    sd = random_state(seed=21)
    sd["output_layer.linear.weight"] = sd["vocab_embed.embedding"]  # tie_word_embeddings: one parameter
    g = torch.Generator().manual_seed(9)
    params = []  # backbone.parameters(): the tied weight appears once
    for k, v in sd.items():
        if k.endswith("inv_freq") or k == "output_layer.linear.weight":
            continue
        params.append((k, v + 0.05 * torch.randn(v.shape, generator=g)))
    ema = {"decay": 0.9999, "num_updates": 3, "shadow_params": [p for _, p in params]}
    ema_named = dict(params)
    ema_named["output_layer.linear.weight"] = ema_named["vocab_embed.embedding"]
    with fakes:
        torch.save(lightning_ckpt(prefixed(sd), unid2_config(tie=True), ema=ema), tmp_path / "t.ckpt")
    den = memaudit.load(tmp_path / "t.ckpt", weights="ema")
    x = tokens_for(seed=6)
    assert_close(den(x, TIMES), torch.log_softmax(reference_logits(ema_named, x, torch.zeros(3)), -1))


# ------------------------------------------------------------------------------------------- SEDD
SEDD_YAML = """\
ngpus: 8
tokens: {tokens}
training:
  batch_size: 512
  ema: 0.9999
  snapshot_sampling: true
data:
  train: openwebtext
  valid: wikitext103
  cache_dir: data
graph:
  type: {graph}
  file: data
  report_all: false
noise:
  type: {noise}
  sigma_min: 1e-4
  sigma_max: 20
sampling:
  predictor: euler
  steps: 128
  noise_removal: true
optim:
  lr: 0.0003
  beta1: 0.9
model:
  name: small
  type: ddit
  hidden_size: {d}
  cond_dim: {cond}
  length: {length}
  n_blocks: {nb}
  n_heads: {h}
  scale_by_sigma: false
  dropout: 0.1
work_dir: ${{hydra:runtime.output_dir}}
"""


def sedd_run(root: Path, sd, graph="uniform", noise="geometric", with_ema=True):
    (root / ".hydra").mkdir(parents=True)
    (root / "checkpoints-meta").mkdir()
    (root / ".hydra" / "config.yaml").write_text(SEDD_YAML.format(tokens=V, graph=graph, noise=noise, d=D, cond=COND,
                                                                  length=L, nb=NB, h=H))
    ema, named = ema_of(sd, seed=11)
    state = {"optimizer": {"state": {}, "param_groups": [{"lr": 3e-4}]}, "model": sd, "step": 100}
    if with_ema:
        state["ema"] = ema
    torch.save(state, root / "checkpoints-meta" / "checkpoint.pth")
    return named


def sedd_reference(sd, x, sigma):
    """SEDD forward (log score, current token's entry set to 0), then p(x_0^i | x_t^{-i}) by inverting
    the uniform graph's transition: x̂ = (softmax(score) − (1 − e^{−σ})/V) / e^{−σ}, clipped."""
    logits = reference_logits(sd, x, sigma).double()
    logits = logits.scatter(-1, x[..., None], 0.0)
    p = torch.softmax(logits, -1)
    a = torch.exp(-sigma.double())[:, None, None]
    x0 = ((p - (1 - a) / V) / a).clamp_min(0)
    return torch.log(x0 / x0.sum(-1, keepdim=True)).clamp_min(-1e4).float()


# Inverting the mixing, x̂ = (p_t − (1 − α_t)/V)/α_t, is ill-conditioned for unlikely tokens at high
# noise (cancellation, then a division by α_t): float32-level differences in the score become large
# *relative* errors in tiny probabilities. So: log-probabilities are compared at low noise (the
# probe's regime), probabilities at every time, and the raw score (the network itself) at every time.
SEDD_TIMES = torch.tensor([0.0, 0.02, 0.1])


def assert_sedd_close(den, sd, x, sigma_fn):
    assert_close(den(x, SEDD_TIMES), sedd_reference(sd, x, sigma_fn(SEDD_TIMES)))
    assert_close(den(x, TIMES).exp(), sedd_reference(sd, x, sigma_fn(TIMES)).exp())
    with torch.no_grad():
        assert_close(den.model(x, sigma_fn(TIMES)), reference_logits(sd, x, sigma_fn(TIMES)))


def test_sedd_uniform_run_matches_reference_with_ema_default(tmp_path):
    sd = random_state(seed=30)
    ema_named = sedd_run(tmp_path / "run", sd)
    den = memaudit.load(tmp_path / "run")
    assert den.family == "sedd-uniform" and den.weights == "ema"
    x = tokens_for(seed=7)

    def geometric(t):
        return 1e-4 ** (1 - t) * 20.0 ** t  # SEDD GeometricNoise.total_noise

    assert_sedd_close(den, ema_named, x, geometric)
    raw = memaudit.load(tmp_path / "run", weights="raw")
    assert_sedd_close(raw, sd, x, geometric)
    # a specific checkpoint file inside the run resolves to the same run
    assert memaudit.load(tmp_path / "run" / "checkpoints-meta" / "checkpoint.pth").family == "sedd-uniform"


def test_sedd_score_to_x0_inverts_the_uniform_graph_exactly():
    from memaudit.adapters.sedd import x0_log_probs_from_log_score

    g = torch.Generator().manual_seed(0)
    x0 = torch.softmax(3 * torch.randn(2, 5, V, generator=g, dtype=torch.float64), -1)  # p(x_0^i | rest)
    sigma = torch.tensor([0.05, 1.3], dtype=torch.float64)
    a = torch.exp(-sigma)[:, None, None]
    p_t = a * x0 + (1 - a) / V                                # single-site noisy conditional
    x = torch.randint(0, V, (2, 5), generator=g)
    log_score = torch.log(p_t) - torch.log(p_t.gather(-1, x[..., None]))  # exact log p_t(y)/p_t(x)
    got = x0_log_probs_from_log_score(log_score.float(), x, sigma.float(), V).double().exp()
    assert (got - x0).abs().max() < 1e-4


def test_sedd_loglinear_noise(tmp_path):
    sd = random_state(seed=31)
    sedd_run(tmp_path / "run", sd, noise="loglinear", with_ema=False)
    den = memaudit.load(tmp_path / "run")
    assert den.weights == "raw"
    x = tokens_for(seed=8)
    assert_sedd_close(den, sd, x, loglinear_sigma)


def test_sedd_hf_mixin_folder(tmp_path):
    import yaml

    sd = random_state(seed=32)
    cfg = yaml.safe_load(SEDD_YAML.format(tokens=V, graph="uniform", noise="geometric", d=D, cond=COND, length=L,
                                            nb=NB, h=H))
    (tmp_path / "config.json").write_text(json.dumps(cfg))  # PyTorchModelHubMixin stores the whole config
    write_safetensors(tmp_path / "model.safetensors", sd)
    den = memaudit.load(tmp_path)
    assert den.family == "sedd-uniform" and den.weights == "raw"
    assert den.provenance["format"] == "sedd-hf"
    assert_sedd_close(den, sd, tokens_for(seed=12), lambda t: 1e-4 ** (1 - t) * 20.0 ** t)


def test_yaml_configs_are_read_with_pyyaml_safe_load(tmp_path):
    import yaml

    from memaudit.adapters.common import read_yaml

    text = SEDD_YAML.format(tokens=V, graph="uniform", noise="geometric", d=D, cond=COND, length=L, nb=NB, h=H)
    text += "callbacks:\n  - a\n  - name: b\n    every: 2\nflow: [1, 2.5, x]\nquoted: 'it''s'  # comment\n"
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert read_yaml(path) == yaml.safe_load(text)
    assert read_yaml(path)["noise"]["sigma_min"] == "1e-4"  # YAML 1.1: no dot, a string; as_float reads it


def test_yaml_non_ascii_and_block_scalars_round_trip(tmp_path):
    from memaudit.adapters.common import read_yaml

    path = tmp_path / "config.yaml"
    path.write_text("name: café\nquoted: \"naïve ☃\"\nnote: |\n  first line\n    indented\n  last\n"
                    "folded: >-\n  one\n  two\nafter: 1\n", encoding="utf-8")
    assert read_yaml(path) == {"name": "café", "quoted": "naïve ☃", "note": "first line\n  indented\nlast\n",
                               "folded": "one two", "after": 1}


@pytest.mark.parametrize("text, message", [
    ("a: !!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
    ("a: [1, 2\n", "not valid YAML"),
    ("day: 2024-13-45\n", "not valid YAML"),
    (b"name: caf\xe9\n", "unreadable"),
])
def test_bad_yaml_is_one_load_error(tmp_path, text, message):
    from memaudit.adapters.common import read_yaml

    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(LoadError, match=message) as info:
        read_yaml(path)
    assert "\n" not in str(info.value)


# -------------------------------------------------------------------------------- HF directories
def write_safetensors(path, sd):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


def test_hf_udlm_matches_reference(tmp_path):
    sd = random_state(seed=40)
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["UDLM"], "auto_map": {"AutoConfig": "configuration_udlm.UDLMConfig"},
        "model_type": "udlm", "vocab_size": V, "model_length": L, "hidden_dim": D, "cond_dim": COND,
        "n_blocks": NB, "n_heads": H, "dropout": 0.1, "time_conditioning": True, "cfg": False,
        "cfg_num_classes": -1, "return_dict": False}))
    write_safetensors(tmp_path / "model.safetensors", prefixed(sd))
    (tmp_path / "modeling_udlm.py").write_text("raise SystemExit('remote code must never run')\n")
    den = memaudit.load(tmp_path)
    assert den.family == "udlm" and den.weights == "ema"
    x = tokens_for(seed=9)
    assert_close(den(x, TIMES), torch.log_softmax(reference_logits(sd, x, loglinear_sigma(TIMES)), -1))
    with pytest.raises(LoadError, match="only its ema weights"):
        memaudit.load(tmp_path, weights="raw")


def test_hf_duo_pytorch_model_bin(tmp_path):
    sd = random_state(seed=41)
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["DUO"], "model_type": "DUO", "vocab_size": V, "model_length": L, "hidden_dim": D,
        "cond_dim": COND, "n_blocks": NB, "n_heads": H, "dropout": 0.1, "causal": False, "var_min": True}))
    torch.save(prefixed(sd), tmp_path / "pytorch_model.bin")
    den = memaudit.load(tmp_path, trust_remote_code=True)
    assert den.family == "duo" and any("trust-remote-code ignored" in n for n in den.provenance["notes"])
    x = tokens_for(seed=10)
    assert_close(den(x, TIMES), torch.log_softmax(reference_logits(sd, x, loglinear_sigma(TIMES)), -1))


def gidd_dir(root: Path, sd, p_uniform=0.1):
    from tokenizers import AddedToken, Tokenizer, models

    root.mkdir(parents=True, exist_ok=True)
    hd = D // H
    inv = 1.0 / (10_000 ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.einsum("i,j->ij", torch.arange(L).float(), inv)
    emb = torch.cat([ang, ang], -1)
    cos = emb.cos()[None, :, None, None, :].repeat(1, 1, 3, 1, 1)
    sin = emb.sin()[None, :, None, None, :].repeat(1, 1, 3, 1, 1)
    cos[:, :, 2].fill_(1.0)
    sin[:, :, 2].fill_(0.0)
    state = {k: v for k, v in sd.items() if k != "rotary_emb.inv_freq"}
    state["rotary_emb.cos_cached"], state["rotary_emb.sin_cached"] = cos, sin
    write_safetensors(root / "model.safetensors", state)
    (root / "config.json").write_text(json.dumps({
        "architectures": ["DIT"], "model_type": "dit", "vocab_size": V, "max_seq_len": L, "hidden_size": D,
        "timestep_cond_dim": COND, "num_hidden_layers": NB, "num_attention_heads": H, "attention_dropout": 0.0,
        "p_uniform": p_uniform, "t_eps": 1e-4}))
    tok = Tokenizer(models.WordLevel({f"g{i}": i for i in range(V - 1)}, unk_token="g0"))
    tok.add_special_tokens([AddedToken("[MASK]", special=True)])
    tok.save(str(root / "tokenizer.json"))
    (root / "special_tokens_map.json").write_text(json.dumps({"mask_token": "[MASK]"}))


def test_hf_gidd_raw_time_and_mask_logit_removed(tmp_path):
    sd = random_state(seed=42)
    gidd_dir(tmp_path / "g", sd)
    den = memaudit.load(tmp_path / "g")
    assert den.family == "gidd" and den.time_input == "t"
    assert den.vocab_size == V - 1 and den.output_vocab_slice == V - 1
    x = tokens_for(seed=11, vocab=V - 1)
    t = TIMES.clamp(1e-4, 1 - 1e-4)
    logits = reference_logits(sd, x, t)
    logits[..., V - 1] = -1e6  # what GIDD's sampler does to the mask logit
    ref = torch.log_softmax(logits, -1)[..., : V - 1]
    assert_close(den(x, TIMES), ref)


def test_hub_snapshot_path_records_repo_and_revision(tmp_path):
    sd = random_state(seed=43)
    snap = tmp_path / "hub" / "models--org--tiny-udlm" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({
        "model_type": "udlm", "vocab_size": V, "model_length": L, "hidden_dim": D, "cond_dim": COND,
        "n_blocks": NB, "n_heads": H, "time_conditioning": True, "cfg": False}))
    write_safetensors(snap / "model.safetensors", prefixed(sd))
    den = memaudit.load(snap)
    assert den.provenance["hub_id"] == "org/tiny-udlm" and den.provenance["revision"] == "0123abcd"


def test_hub_id_offline_without_cache_is_a_load_error(monkeypatch, tmp_path):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LoadError, match="could not resolve hub id"):
        memaudit.load("memaudit-test/definitely-not-cached")


def test_inspect_json_for_gidd_reports_slice_and_raw_time(tmp_path):
    from typer.testing import CliRunner

    from memaudit.cli import app

    gidd_dir(tmp_path / "g", random_state(seed=44))
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "g"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["family"] == "gidd" and doc["time_input"] == "t" and doc["output_vocab_slice"] == V - 1
    assert doc["architecture"]["output_classes"] == V and doc["vocab_size"] == V - 1
    assert any("approximated as uniform" in n for n in doc["notes"])


def test_slow_gpt2_tokenizer_rebuilt_from_encoder_and_ranks():
    from memaudit.adapters.common import tokenizer_from_pickle
    from memaudit.adapters.safe_pickle import inert_class

    cls = inert_class("transformers.models.gpt2.tokenization_gpt2.GPT2Tokenizer", refuse=False)
    rec = cls.__new__(cls)
    encoder = {"h": 0, "i": 1, "hi": 2, "\u0120": 3, "\u0120hi": 4}
    encoder = {"h": 0, "i": 1, "hi": 2, "Ġ": 3, "Ġhi": 4}
    rec.__setstate__({"encoder": encoder, "bpe_ranks": {("h", "i"): 0, ("Ġ", "hi"): 1},
                      "added_tokens_encoder": {"[PAD]": 5}})
    tok, how = tokenizer_from_pickle(rec)
    assert tok is not None and "byte-level BPE" in how
    assert tok.get_vocab_size() == 6 and tok.token_to_id("[PAD]") == 5
    assert tok.encode("hi hi").ids == [2, 4]


def test_checkpoint_without_tokenizer_runs_on_ids(tmp_path, fakes):
    sd = random_state(seed=45)
    with fakes:
        torch.save(lightning_ckpt(prefixed(sd), duo_config()), tmp_path / "n.ckpt")
    den = memaudit.load(tmp_path / "n.ckpt")
    assert den.tokenizer is None and den.decode([1, 2]) is None
    # its config names the tokenizer 'fake', which is in no hub cache (the tests run offline)
    assert den.provenance["tokenizer"]["kind"] == "none"
    assert den.provenance["tokenizer_source"] == "'fake' named by data.tokenizer_name_or_path could not be loaded"
    assert any("names tokenizer 'fake'" in note and "--tokenizer" in note for note in den.provenance["notes"])


# ------------------------------------------------------------------------ masked families refused
@pytest.mark.parametrize("variant", ["duo-mdlm", "udlm-mdlm", "unid2-mdlm", "duo-sedd"])
def test_masked_lightning_checkpoints_refused(tmp_path, fakes, variant):
    sd = random_state(seed=50)
    cfg = {"duo-mdlm": duo_config(**{"algo.name": "mdlm", "algo.parameterization": "subs",
                                     "algo.time_conditioning": False}),
           "duo-sedd": duo_config(**{"algo.name": "sedd", "algo.parameterization": "score"}),
           "udlm-mdlm": udlm_config(diffusion="absorbing_state", parameterization="subs", time_conditioning=False),
           "unid2-mdlm": {**unid2_config(), "algo": {"_target_": "discrete_diffusion.algorithms.mdlm.MDLM",
                                                     "name": "mdlm", "parameterization": "subs",
                                                     "time_conditioning": False}}}[variant]
    with fakes:
        torch.save(lightning_ckpt(prefixed(sd), cfg), tmp_path / "m.ckpt")
    with pytest.raises(UnsupportedCheckpoint, match="zero off-mask by construction"):
        memaudit.load(tmp_path / "m.ckpt")


def test_sedd_absorb_and_hf_mdlm_and_pure_mask_gidd_refused(tmp_path):
    sd = random_state(seed=51)
    sedd_run(tmp_path / "absorb", sd, graph="absorb")
    with pytest.raises(UnsupportedCheckpoint, match="absorb"):
        memaudit.load(tmp_path / "absorb")
    (tmp_path / "mdlm").mkdir()
    (tmp_path / "mdlm" / "config.json").write_text(json.dumps({"model_type": "mdlm", "vocab_size": V}))
    with pytest.raises(UnsupportedCheckpoint, match="mdlm"):
        memaudit.load(tmp_path / "mdlm")
    gidd_dir(tmp_path / "g0", sd, p_uniform=0.0)
    with pytest.raises(UnsupportedCheckpoint, match="p_uniform = 0"):
        memaudit.load(tmp_path / "g0")


# ------------------------------------------------------------------------------------- registry
def test_registry_lists_the_builtin_families_in_detection_order():
    from memaudit.adapters import BUILTIN_ADAPTERS, REGISTRY

    assert list(BUILTIN_ADAPTERS) == ["memaudit", "duo/udlm/uni-d2 .ckpt", "sedd (uniform graph)", "diffusion_gemma",
                                      "remote code (--trust-remote-code)", "hf (udlm, duo, gidd dit)"]
    loaded = REGISTRY.load_all()
    assert [a.family for a in loaded] == list(BUILTIN_ADAPTERS)  # the table's names are the classes' own


def test_adapters_are_imported_on_first_use(tmp_path):
    """Loading a native checkpoint imports the native adapter only; an unknown file tries them all."""
    import subprocess

    from memaudit.adapters.native import save_checkpoint
    from memaudit.model import DDiT, DDiTConfig

    torch.manual_seed(0)
    model = DDiT(DDiTConfig(vocab_size=V, seq_len=L, hidden_size=D, cond_dim=COND, n_blocks=NB, n_heads=H))
    save_checkpoint(tmp_path / "nat", model, {"schedule": {"name": "loglinear", "eps": 1e-3}})
    (tmp_path / "x.txt").write_text("not a checkpoint")
    code = textwrap.dedent(f"""
        import sys, memaudit
        def loaded():
            return sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("memaudit.adapters.")
                          and m.rsplit(".", 1)[1] in ("native", "lightning", "sedd", "hf"))
        assert loaded() == [], loaded()
        memaudit.load({str(tmp_path / "nat")!r})
        assert loaded() == ["native"], loaded()
        try:
            memaudit.load({str(tmp_path / "x.txt")!r})
        except memaudit.LoadError as e:
            assert "supported families: memaudit, duo/udlm/uni-d2 .ckpt, sedd" in str(e), e
        assert loaded() == ["hf", "lightning", "native", "sedd"], loaded()
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


class ToyAdapter:
    """A family that recognises `*.toy` files (tests of the registry; never loads anything)."""

    family = "toy"
    description = "a .toy file"

    def detect(self, path):
        return path.suffix == ".toy"

    def load(self, path, weights, trust_remote_code):
        raise UnsupportedCheckpoint(f"{path}: toy checkpoints are recognised, never loaded")


def test_register_adds_a_family_after_the_builtins(tmp_path, monkeypatch):
    from memaudit.adapters import BUILTIN_ADAPTERS, REGISTRY, detect, register

    monkeypatch.setattr(REGISTRY, "entries", list(REGISTRY.entries))
    assert register(ToyAdapter) is ToyAdapter
    (tmp_path / "a.toy").write_text("toy")
    assert detect(tmp_path / "a.toy").family == "toy"
    assert REGISTRY.families()[:len(BUILTIN_ADAPTERS) + 1] == [*BUILTIN_ADAPTERS, "toy"]
    with pytest.raises(UnsupportedCheckpoint, match="toy checkpoints"):
        memaudit.load(tmp_path / "a.toy")


def _plugin_package(root: Path, body: str, name: str = "toyplug") -> Path:
    """An installed-looking package on sys.path with a `memaudit.adapters` entry point."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[memaudit.adapters]\ntoy-plugin = {name}:Plugin\n")
    (root / f"{name}.py").write_text(body)
    return root


def test_entry_point_plugins_are_found_after_the_builtins(tmp_path, monkeypatch):
    from memaudit.adapters import REGISTRY, detect

    root = _plugin_package(tmp_path / "site", textwrap.dedent("""
        class Plugin:
            family = "toy-plugin"
            def detect(self, path):
                return path.suffix == ".toyplug"
            def load(self, path, weights, trust_remote_code):
                raise NotImplementedError
    """))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(REGISTRY, "plugins", None)
    (tmp_path / "m.toyplug").write_text("x")
    assert detect(tmp_path / "m.toyplug").family == "toy-plugin"
    assert REGISTRY.families()[-1] == "toy-plugin"
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(LoadError, match="supported families: memaudit, .*, toy-plugin"):
        detect(tmp_path / "x.txt")


def test_a_broken_plugin_is_one_load_error(tmp_path, monkeypatch):
    from memaudit.adapters import REGISTRY, detect

    root = _plugin_package(tmp_path / "site", "raise ImportError('needs a missing library')\n", name="brokenplug")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(REGISTRY, "plugins", None)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(LoadError, match=r"adapter plugin 'toy-plugin' \(brokenplug:Plugin\) cannot be loaded: "
                                        r"ImportError: needs a missing library"):
        detect(tmp_path / "x.txt")


def test_training_layout_comes_from_the_data_config(duo_ckpt):
    """Duo/UDLM configs say whether training blocks were cut from a stream (data.wrap), which the
    scan's position test needs; memaudit's own checkpoints are always stream-cut."""
    from memaudit.adapters.lightning import training_layout
    from memaudit.probe import resolve_layout as scan_layout

    den = memaudit.load(duo_ckpt[0])
    assert den.provenance["training_layout"] is None                  # the fixture's config has no data.wrap
    assert scan_layout("auto", den) == "unknown" and scan_layout("aligned", den) == "aligned"
    assert training_layout(duo_config(**{"data.wrap": True})) == "stream"
    assert training_layout(duo_config(**{"data.wrap": False})) == "aligned"
    assert training_layout({"data": "lm1b"}) is None
