"""The generated text sources (validation languages, seeded and identical on every machine and
Python): ``"templates"``, English sentences from a small grammar (low entropy), and
``"records"``, service log files in three line formats (structured text).
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence


class Draws:
    """Seeded uniform draws from Python's Mersenne Twister, used only through ``random()``
    (whose output for a given integer seed is stable across Python versions), so a generated
    corpus is identical on every machine and Python."""

    def __init__(self, kind: str, seed: int) -> None:
        import random

        digest = hashlib.sha256(f"memaudit-{kind}-{seed}".encode("utf-8")).digest()
        self._rng = random.Random(int.from_bytes(digest[:8], "little"))

    def below(self, n: int) -> int:
        return min(n - 1, int(self._rng.random() * n))

    def pick(self, items: Sequence[Any]) -> Any:
        return items[self.below(len(items))]

    def chance(self, p: float) -> bool:
        return self._rng.random() < p

    def between(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        return lo + self.below(hi - lo + 1)

    def weighted(self, items: Sequence[Any], weights: Sequence[float]) -> Any:
        u = self._rng.random() * sum(weights)
        for item, w in zip(items, weights):
            u -= w
            if u < 0:
                return item
        return items[-1]


# The template grammar. Every subject belongs to a kind; its verbs, adjectives and pronoun depend
# on the kind, and each verb selects the kind of its object, so most words are largely determined
# by their neighbours while the free choices (nouns, adjectives, places, times) give far more than
# 10^6 distinct sentences (``template_sentence_count``).
_T_SUBJECTS = {
    "animal": ("cat", "dog", "fox", "horse", "rabbit", "owl", "goat", "mouse", "bear", "duck"),
    "person": ("farmer", "teacher", "doctor", "baker", "sailor", "pilot", "painter", "student",
               "miner", "singer"),
    "machine": ("robot", "truck", "tractor", "drone", "crane", "train", "boat", "printer",
                "pump", "radio"),
}
_T_SUBJECT_ADJECTIVES = {
    "animal": ("small", "hungry", "old", "young", "quiet", "brown", "lazy", "clever"),
    "person": ("tired", "happy", "old", "young", "busy", "careful", "clever", "quiet"),
    "machine": ("new", "old", "broken", "red", "noisy", "heavy", "small", "shiny"),
}
_T_STATES = {  # "The cat was {state} because it ..."
    "animal": ("hungry", "tired", "happy", "afraid", "cold"),
    "person": ("tired", "happy", "angry", "proud", "worried"),
    "machine": ("hot", "slow", "loud", "busy", "dirty"),
}
_T_VERBS = {  # (past tense, kind of object)
    "animal": (("chased", "animal"), ("watched", "person"), ("ate", "food"), ("found", "thing"),
               ("carried", "thing"), ("followed", "person"), ("smelled", "food")),
    "person": (("cooked", "food"), ("bought", "food"), ("sold", "thing"), ("painted", "thing"),
               ("fixed", "machine"), ("drove", "machine"), ("fed", "animal"), ("found", "thing")),
    "machine": (("lifted", "thing"), ("moved", "thing"), ("carried", "food"), ("pulled", "machine"),
                ("scanned", "thing"), ("delivered", "food"), ("towed", "machine")),
}
_T_OBJECTS = {
    "food": ("bread", "apples", "fish", "cheese", "corn", "soup", "eggs", "rice", "honey", "carrots"),
    "thing": ("box", "ball", "letter", "key", "map", "rope", "basket", "lamp", "chair", "book"),
    "animal": _T_SUBJECTS["animal"],
    "person": _T_SUBJECTS["person"],
    "machine": _T_SUBJECTS["machine"],
}
_T_OBJECT_ADJECTIVES = {
    "food": ("fresh", "warm", "sweet", "cold"),
    "thing": ("red", "heavy", "old", "little"),
    "animal": ("small", "old", "brown", "young"),
    "person": ("old", "young", "tired", "busy"),
    "machine": ("new", "old", "broken", "shiny"),
}
_T_PLACES = ("in the garden", "near the river", "at the market", "on the hill", "behind the barn",
             "under the bridge", "in the city", "by the lake", "at the station", "in the forest",
             "on the farm", "near the school", "in the kitchen", "at the harbor", "on the road",
             "in the village")
_T_TIMES = ("in the morning", "at night", "after lunch", "before dinner", "on monday",
            "on friday", "in the evening", "at noon", "every day", "last week")
_T_NAMES = {"she": ("Anna", "Mary", "Lena", "Sara"), "he": ("Tom", "Paul", "Jack", "Max")}
_TEMPLATE_DOCUMENTS = 11000
_TEMPLATE_SENTENCES = (3, 8)   # sentences per document, inclusive
_GENERATOR_VERSION = 1          # bump when a generator changes (the text hash would catch it anyway)


def _template_object(d: Draws, verb_kind: str) -> str:
    noun = d.pick(_T_OBJECTS[verb_kind])
    if d.chance(0.4):
        return f"the {d.pick(_T_OBJECT_ADJECTIVES[verb_kind])} {noun}"
    return f"the {noun}"


def _template_document(d: Draws) -> str:
    kind = d.pick(tuple(_T_SUBJECTS))
    noun = d.pick(_T_SUBJECTS[kind])
    adjective = d.pick(_T_SUBJECT_ADJECTIVES[kind])
    pronoun = "it" if kind != "person" else d.pick(("she", "he"))
    name = d.pick(_T_NAMES[pronoun]) if kind == "person" else None
    verbs = _T_VERBS[kind]
    sentences = []
    for i in range(d.between(*_TEMPLATE_SENTENCES)):
        if i == 0:
            subject = f"the {adjective} {noun}"
        else:
            subject = d.weighted((f"the {noun}", pronoun, f"the {adjective} {noun}", name or pronoun),
                                 (3, 4, 1, 1 if name else 0))
        verb, obj_kind = d.pick(verbs)
        obj = _template_object(d, obj_kind)
        template = d.below(6)
        if template == 0:
            s = f"{subject} {verb} {obj} {d.pick(_T_PLACES)}."
        elif template == 1:
            s = f"{d.pick(_T_TIMES)}, {subject} {verb} {obj}."
        elif template == 2:
            verb2, obj_kind2 = d.pick(verbs)
            s = f"{subject} {verb} {obj} and then {verb2} {_template_object(d, obj_kind2)}."
        elif template == 3:
            s = f"{subject} was {d.pick(_T_STATES[kind])} because {pronoun} {verb} {obj} " \
                f"{d.pick(_T_PLACES)}."
        elif template == 4:
            s = f"{subject} {verb} {obj} {d.pick(_T_PLACES)} {d.pick(_T_TIMES)}."
        else:
            s = f"later {pronoun} {verb} {obj}."
        sentences.append(s[0].upper() + s[1:])
    return " ".join(sentences)


def template_sentence_count() -> int:
    """Distinct sentences the grammar can produce with a first-mention subject ("the ADJ NOUN")
    — a lower bound on its variety."""
    total = 0
    for kind, nouns in _T_SUBJECTS.items():
        subjects = len(nouns) * len(_T_SUBJECT_ADJECTIVES[kind])
        objects = [len(_T_OBJECTS[k]) * (1 + len(_T_OBJECT_ADJECTIVES[k])) for _, k in _T_VERBS[kind]]
        vo = sum(objects)  # verb + object phrases
        total += subjects * vo * (len(_T_PLACES)                      # template 0
                                  + len(_T_TIMES)                     # template 1
                                  + vo                                # template 2
                                  + len(_T_STATES[kind]) * len(_T_PLACES)  # template 3
                                  + len(_T_PLACES) * len(_T_TIMES))   # template 4
    return total


def templates_documents(seed: int) -> list[str]:
    d = Draws("templates", seed)
    return [_template_document(d) for _ in range(_TEMPLATE_DOCUMENTS)]


# Structured records: log files of one service each, in one of three line formats.
_R_SERVICES = ("auth", "api", "billing", "cache", "db", "gateway", "mailer", "search", "storage",
               "worker")
_R_LEVELS = ("INFO", "WARN", "ERROR", "DEBUG")
_R_LEVEL_WEIGHTS = (0.78, 0.12, 0.06, 0.04)
_R_STATUS = {"INFO": (200, 200, 200, 201, 204, 304), "WARN": (404, 429, 200, 408),
             "ERROR": (500, 502, 503, 504), "DEBUG": (200,)}
_R_METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
_R_PATHS = ("/v1/users", "/v1/orders", "/v1/items", "/v1/login", "/v1/search", "/v2/cart",
            "/v2/payments", "/health")
_R_MESSAGES = {
    "INFO": ("request served", "user {uid} logged in", "cache hit for key {key}",
             "job {job} finished in {ms}ms", "session {req} created", "config reloaded"),
    "WARN": ("slow response from {peer}", "retrying connection to {peer}", "disk usage at {pct}%",
             "rate limit reached for user {uid}"),
    "ERROR": ("connection refused by {peer}", "timeout after {ms}ms", "invalid token for user {uid}",
              "job {job} failed with code {code}"),
    "DEBUG": ("cache miss for key {key}", "opened connection to {peer}"),
}
_RECORD_DOCUMENTS = 850
_RECORD_LINES = (10, 40)        # lines per log file, inclusive


def _record_document(d: Draws) -> str:
    import datetime

    service = d.pick(_R_SERVICES)
    host = f"{service}-{d.between(1, 12):02d}"
    fmt = d.below(3)
    when = datetime.datetime(2024, 1, 1) + datetime.timedelta(
        days=d.below(366), seconds=d.below(86400))
    lines = []
    for _ in range(d.between(*_RECORD_LINES)):
        when += datetime.timedelta(seconds=d.weighted((0, 1, 2, 5, 17, 60), (4, 4, 3, 2, 1, 1)))
        level = d.weighted(_R_LEVELS, _R_LEVEL_WEIGHTS)
        status = d.pick(_R_STATUS[level])
        req = f"{d.below(1 << 16):04x}"
        ms = d.between(1, 40) if level != "ERROR" else d.pick((1000, 2000, 5000, 30000))
        fields = {"uid": d.between(1, 999), "key": f"{d.pick(('user', 'item', 'page'))}:{d.between(1, 99)}",
                  "job": d.between(100, 999), "ms": ms, "req": req, "pct": d.between(80, 99),
                  "code": d.between(1, 9),
                  "peer": f"{d.pick(_R_SERVICES)}-{d.between(1, 12):02d}"}
        message = d.pick(_R_MESSAGES[level]).format(**fields)
        method, path = d.pick(_R_METHODS), d.pick(_R_PATHS)
        if fmt == 0:
            line = (f"{when:%Y-%m-%d %H:%M:%S} {level:<5} {host} [req={req}] {method} {path} "
                    f"{status} {ms}ms - {message}")
        elif fmt == 1:
            line = (f"ts={when:%Y-%m-%dT%H:%M:%SZ} level={level.lower()} host={host} req={req} "
                    f"method={method} path={path} status={status} dur_ms={ms} msg=\"{message}\"")
        else:
            line = f"{when:%Y-%m-%dT%H:%M:%S},{level},{host},{req},{method},{path},{status},{ms},{message}"
        lines.append(line)
    return "\n".join(lines)


def records_documents(seed: int) -> list[str]:
    d = Draws("records", seed)
    return [_record_document(d) for _ in range(_RECORD_DOCUMENTS)]
