"""What the probe does differently for families outside the rule's calibration, and for
prompt-conditioned denoisers (DiffusionGemma): the family gate of the verdict, and the prompts.

The family gate. The scan rule (memaudit.verdict) was fitted on DDiT families (Duo, UDLM, SEDD,
memaudit's references). A denoiser whose `calibration_family` is not None belongs to another family;
its verdict is definite only once references of that family (trained by memaudit's trainer with the
family's objective) have validated the rule on it, recorded in the rule's domain as
`"families": [...]`. Until then the scan says `inconclusive (outside_domain)`, keeps every statistic,
and its explanation states what the DDiT rule would have said — evidence, never the verdict.

Prompts. A prompt-conditioned denoiser carries its prompt (`with_prompt`); the probe, recovery and
sampler call it as any other. With several prompts the data-free probe spreads its samples over the
first MAX_PROBE_PROMPTS of them in blocks (`prompt_runs`): sample i is drawn and measured under prompt
(i // block) mod P, block = ⌈min_samples / P⌉, so every look of an adaptive scan covers every prompt
and a sample's prompt does not depend on the batch size. `resolve_prompts` turns `--prompt TEXT` / `--prompts FILE` (one per
line, or .jsonl records with "prompt" / "messages") into token ids; with neither, the chat
template's empty user turn when the tokenizer has one, else the BOS token.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UsageError


MAX_PROBE_PROMPTS = 8


class PromptError(UsageError):
    """Prompts that cannot be read or tokenized (exit 2)."""


def family_gate(rule, denoiser, decision, domain: dict):
    """(decision, domain) for a denoiser of a family the rule has not validated: inconclusive,
    reason outside_domain, with the DDiT rule's reading kept in the explanation."""
    from .verdict.scan import Decision

    family = getattr(denoiser, "calibration_family", None)
    validated = [str(f) for f in (rule.domain.get("families") or [])]
    if family is None or family in validated:
        return decision, domain
    what = (f"family {family} (the rule is validated on DDiT families"
            + (f" and {', '.join(validated)}" if validated else "") + ")")
    domain = {**domain, "inside": False, "outside": [*domain.get("outside", []), what], "family": family}
    explanation = (f"the rule's thresholds were fitted on DDiT models; no {family} references have validated "
                   f"them, so no definite verdict. The DDiT rule would read: {decision.verdict} "
                   f"({decision.reason}): {decision.explanation}")
    return Decision("inconclusive", "outside_domain", explanation, settled=True), domain


def _chat_prompt(denoiser, text: str) -> list[int] | None:
    """The chat template's user turn with `text`, rendered with transformers' tokenizer, or None."""
    template = getattr(denoiser, "chat_template", None)
    if not template or denoiser.tokenizer is None:
        return None
    try:   # the checkpoint's template is rendered in jinja2's sandbox: it cannot reach Python objects
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return None
    try:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        rendered = env.from_string(template).render(messages=[{"role": "user", "content": text}],
                                                    add_generation_prompt=True, bos_token="", eos_token="")
    except Exception:  # noqa: BLE001 - a template we cannot render: fall back to BOS
        return None
    ids = denoiser.tokenizer.encode(rendered, add_special_tokens=False).ids
    bos = getattr(denoiser, "bos_token_id", None)
    return ([bos] if bos is not None else []) + list(ids)


def encode_prompt(denoiser, text: str) -> list[int]:
    """Token ids of one prompt: 'ids:1,2,3' as given; text through the chat template when there is
    one, else through the tokenizer after BOS."""
    if text.startswith("ids:"):
        try:
            ids = [int(v) for v in text[4:].replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise PromptError(f"--prompt {text!r:.60}: 'ids:' takes comma-separated token ids") from None
        if not ids or not all(0 <= i < denoiser.vocab_size for i in ids):
            raise PromptError(f"--prompt {text!r:.60}: token ids must lie in [0, {denoiser.vocab_size})")
        return ids
    chat = _chat_prompt(denoiser, text)
    if chat is not None:
        return chat
    if denoiser.tokenizer is None:
        raise PromptError("this checkpoint has no tokenizer: give prompts as token ids ('ids:2,17,5') or "
                          "pass --tokenizer")
    bos = getattr(denoiser, "bos_token_id", None)
    return ([bos] if bos is not None else []) + list(denoiser.tokenizer.encode(text, add_special_tokens=False).ids)


def text_lines(path: str | Path, flag: str, error=None):
    """(line number, text) of the non-blank lines of a UTF-8 file; `error` (an exception class,
    default PromptError) names `flag` when it cannot be read. With a .jsonl file each text is parsed
    to a JSON value."""
    error = error or PromptError
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{flag} {path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            yield n, line
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{flag} {path}:{n}: not a JSON line ({e.msg})") from None


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a file: one per line, or JSON lines with 'prompt' (or the user turns of 'messages')."""
    prompts = []
    for n, value in text_lines(path, "--prompts"):
        prompt = value if isinstance(value, str) and Path(path).suffix != ".jsonl" else prompt_of(value)
        if prompt is None:
            raise PromptError(f"--prompts {path}:{n}: no 'prompt' or user turn in 'messages'")
        prompts.append(prompt)
    if not prompts:
        raise PromptError(f"--prompts {path}: no prompts")
    return prompts


def field_or_turn(record, fields: tuple, role: str):
    """The first of `fields` a record holds as a string (or a list of token ids), else the text of the
    last `role` turn of its chat `messages`; None when it has neither."""
    if not isinstance(record, dict):
        return None
    for name in fields:
        if isinstance(record.get(name), (str, list)):
            return record[name]
    messages = record.get("messages")
    turns = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == role] \
        if isinstance(messages, list) else []
    return turns[-1] if turns and isinstance(turns[-1], str) else None


def prompt_of(record) -> str | None:
    """The prompt of a prompt/response or chat record."""
    found = field_or_turn(record, ("prompt",), "user")
    return found if isinstance(found, str) else None


def resolve_prompts(denoiser, prompt: str | None = None, prompts_file: str | None = None):
    """The denoiser conditioned on its prompts, and a description for the report. Only for
    prompt-conditioned denoisers; others are returned as they are (a prompt given to one is an error)."""
    if not getattr(denoiser, "prompt_conditioned", False):
        if prompt is not None or prompts_file is not None:
            raise PromptError(f"--prompt / --prompts apply to prompt-conditioned families; this is a "
                              f"{denoiser.family} checkpoint, which generates unconditionally")
        return denoiser
    if prompt is not None and prompts_file is not None:
        raise PromptError("give --prompt or --prompts, not both")
    if prompts_file is not None:
        texts = list(dict.fromkeys(read_prompt_file(prompts_file)))   # each distinct prompt once, in order
        source = f"--prompts {Path(prompts_file).name}"
    elif prompt is not None:
        texts, source = [prompt], "--prompt"
    else:
        texts, source = None, "default"
    if texts is None:
        chat = _chat_prompt(denoiser, "")
        if chat is not None:
            ids_list, texts, source = [chat], [""], "chat template, empty user turn"
        else:
            bos = getattr(denoiser, "bos_token_id", None)
            why = "chat template not rendered" if getattr(denoiser, "chat_template", None) else "no chat template"
            ids_list, texts, source = [[bos if bos is not None else 2]], ["<bos>"], f"BOS token ({why})"
    else:
        ids_list = [encode_prompt(denoiser, t) for t in texts]
    run = denoiser.with_prompt(ids_list[0])
    run.prompts = tuple(tuple(p) for p in ids_list)
    run.prompt_texts = tuple(texts)
    run.prompt_source = source
    return run


def prompt_runs(denoiser, first: int, n: int, min_samples: int) -> list[tuple]:
    """[(denoiser under one prompt, first sample, count)] covering samples first … first + n − 1;
    one run of the denoiser as it is unless it carries several prompts."""
    prompts = tuple(getattr(denoiser, "prompts", ()) or ())[:MAX_PROBE_PROMPTS]
    if len(prompts) < 2 or n < 1:
        return [(denoiser, first, n)]
    block = max(1, -(-int(min_samples) // len(prompts)))
    runs: list[tuple] = []
    i = first
    while i < first + n:
        k = (i // block) % len(prompts)
        stop = min(first + n, (i // block + 1) * block)
        runs.append((denoiser.with_prompt(prompts[k]), i, stop - i))
        i = stop
    return runs

