"""Evidence with a fine-tuning set, for prompt-conditioned families (`scan DIR --train sft.jsonl
[--test held.jsonl]`): does the model's own sampler, given a training prompt, reproduce the training
response? The prompt-conditioned analogue of train-vs-test token recovery.

Records are JSON lines, one of
    {"prompt": "...", "response": "..."}                      text (needs the model's tokenizer)
    {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}   chat: last user turn → last assistant turn
    {"prompt_ids": [..], "response_ids": [..]}                token ids (models without a tokenizer)

For each record (at most MAX_RECORDS per split, in file order) SAMPLES_PER_PROMPT responses are drawn
with the family's sampler under the record's prompt (streams seeded from (seed, 'sft', split, record,
k)), cut at the first EOS, and compared with the record's response cut to the canvas: exact match,
the longest verbatim token span shared with it, and the training record whose response shares the
longest span with the sample (the matched record; a held-out prompt answered with a training
response shows here). Reported beside the data-free verdict, labelled; it never decides the exit code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import UsageError
from .prompted import encode_prompt, field_or_turn

MAX_RECORDS = 64
SAMPLES_PER_PROMPT = 2
LABEL = "evidence with fine-tuning data (prompt → response reproduction by the model's own sampler); beside the verdict, never deciding it"


class SFTDataError(UsageError):
    """Unreadable or malformed prompt/response records (exit 2)."""


def _response_of(record: dict):
    return field_or_turn(record, ("response_ids", "response", "completion"), "assistant")


def read_file(path, split: str) -> list[dict]:
    from .prompted import text_lines

    if Path(path).suffix != ".jsonl":
        raise SFTDataError(f"--{split} {path}: prompt → response records are JSON lines (.jsonl)")
    records = []
    for n, record in text_lines(path, f"--{split}", SFTDataError):
        if not isinstance(record, dict):
            raise SFTDataError(f"--{split} {path}:{n}: expected a JSON object")
        prompt = field_or_turn(record, ("prompt_ids", "prompt"), "user")
        response = _response_of(record)
        if prompt is None or response is None:
            raise SFTDataError(f"--{split} {path}:{n}: needs prompt/response, messages (user + assistant) or "
                               f"prompt_ids/response_ids")
        records.append({"prompt": prompt, "response": response, "line": n})
        if len(records) >= MAX_RECORDS:
            break
    if not records:
        raise SFTDataError(f"--{split} {path}: no records")
    return records


def read_records(train, test) -> dict:
    """{'train': [...], 'test': [...]} from the files (test optional)."""
    if train is None:
        raise SFTDataError("--test needs --train (the fine-tuning set) beside it")
    out = {"train": read_file(train, "train"), "source": {"train": Path(train).name}}
    if test is not None:
        out["test"] = read_file(test, "test")
        out["source"]["test"] = Path(test).name
    return out


def _ids(denoiser, value, what: str) -> list[int]:
    if isinstance(value, list):
        if not all(isinstance(v, int) and 0 <= v < denoiser.vocab_size for v in value):
            raise SFTDataError(f"{what}: token ids must be integers in [0, {denoiser.vocab_size})")
        return list(value)
    if denoiser.tokenizer is None:
        raise SFTDataError(f"{what}: text records need the model's tokenizer (or give prompt_ids/response_ids)")
    return list(denoiser.tokenizer.encode(value, add_special_tokens=False).ids)


def cut(ids, eos: int | None, length: int) -> list[int]:
    ids = [int(v) for v in ids][:length]
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos)]
    return ids


def longest_common_span(a: list[int], b: list[int]) -> int:
    """Length of the longest run of tokens shared by a and b (dynamic programming, one row at a time)."""
    if not a or not b:
        return 0
    x, y = np.asarray(a), np.asarray(b)
    prev = np.zeros(len(y) + 1, dtype=np.int64)
    best = 0
    for token in x:
        cur = np.zeros_like(prev)
        cur[1:] = np.where(y == token, prev[:-1] + 1, 0)
        best = max(best, int(cur.max()))
        prev = cur
    return best


@torch.no_grad()
def response_evidence(denoiser, records: dict, seed: int = 0, batch_size: int = 16,
                      samples_per_prompt: int = SAMPLES_PER_PROMPT) -> dict:
    """The evidence dict (summary per split and one row per record × sample)."""
    from .sampling import generate
    from .stats import derive_seed

    length, eos = denoiser.seq_len, getattr(denoiser, "eos_token_id", None)
    train_targets = [cut(_ids(denoiser, r["response"], f"--train line {r['line']}"), eos, length)
                     for r in records["train"]]
    rows, summary = [], {}
    for split in ("train", "test"):
        if split not in records:
            continue
        exact, spans, fractions, matched_train = [], [], [], []
        for i, record in enumerate(records[split]):
            where = f"--{split} line {record['line']}"
            prompt = (_ids(denoiser, record["prompt"], where) if isinstance(record["prompt"], list)
                      else encode_prompt(denoiser, record["prompt"]))
            target = cut(_ids(denoiser, record["response"], where), eos, length)
            drawn = generate(denoiser.with_prompt(prompt), samples_per_prompt, seed=derive_seed(seed, "sft", split, i),
                             batch_size=min(batch_size, samples_per_prompt), show_progress=False)
            for k, sample in enumerate(drawn.tolist()):
                got = cut(sample, eos, length)
                span = longest_common_span(got, target)
                by_record = [longest_common_span(got, t) for t in train_targets]
                best = int(np.argmax(by_record))
                is_exact = got == target
                exact.append(is_exact)
                spans.append(span)
                fractions.append(span / max(1, len(target)))
                matched_train.append(got == train_targets[best])
                rows.append({"split": split, "record": i, "line": record["line"], "sample": k, "exact": is_exact,
                             "longest_span": span, "response_tokens": len(target),
                             "matched_train_record": best, "matched_train_span": by_record[best],
                             "equals_a_training_response": got == train_targets[best],
                             "text": denoiser.decode(got) if denoiser.tokenizer is not None else None})
        summary[split] = {"records": len(records[split]), "samples": len(exact),
                          "exact_match_rate": float(np.mean(exact)),
                          "mean_longest_span_fraction": float(np.mean(fractions)),
                          "max_longest_span": int(max(spans)),
                          "training_response_rate": float(np.mean(matched_train))}
    return {"label": LABEL, "source": records["source"], "samples_per_prompt": samples_per_prompt,
            "max_records": MAX_RECORDS, **summary, "rows": rows}


def print_response_evidence(evidence: dict) -> None:
    """The evidence on stderr, labelled as beside the verdict."""
    import sys

    print(f"{LABEL}:", file=sys.stderr)
    for split in ("train", "test"):
        if split in evidence:
            s = evidence[split]
            print(f"  {split} prompts ({evidence['source'].get(split)}, {s['records']} records × "
                  f"{evidence['samples_per_prompt']} samples): exact reproduction {s['exact_match_rate']:.1%}, "
                  f"mean longest verbatim span {s['mean_longest_span_fraction']:.1%} of the response "
                  f"(longest {s['max_longest_span']} tokens), answered with a training response "
                  f"{s['training_response_rate']:.1%}", file=sys.stderr)
