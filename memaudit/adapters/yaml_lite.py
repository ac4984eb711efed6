"""Read a Hydra `config.yaml` as plain data, safely.

Uses PyYAML's `safe_load` when PyYAML is importable (it builds only dicts, lists and scalars);
otherwise a small block-YAML reader that covers what Hydra writes: nested mappings, `- item`
lists, flow lists of scalars, quoted and plain scalars, comments. Neither ever constructs Python
objects from tags.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import LoadError, read_limited


def load_yaml(path: Path) -> Any:
    try:
        text = read_limited(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise LoadError(f"{path}: unreadable ({e})") from None
    try:
        import yaml  # optional: PyYAML is not a declared dependency
    except ImportError:
        yaml = None
    if yaml is not None:
        try:
            return yaml.safe_load(text)  # aliases become shared references; walks over it are bounded
        except RecursionError:
            raise LoadError(f"{path}: not valid YAML (nested too deeply)") from None
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise LoadError(f"{path}: not valid YAML ({first})") from None
    try:
        return parse_block_yaml(text)
    except ValueError as e:
        raise LoadError(f"{path}: not valid YAML ({e})") from None


_INT = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")
_FLOAT = re.compile(r"^[-+]?(\d[\d_]*\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|\d+[eE][-+]?\d+)$")


def scalar(token: str) -> Any:
    s = token.strip()
    if s == "" or s in ("~", "null", "Null", "NULL"):
        return None
    if s in ("true", "True", "TRUE"):
        return True
    if s in ("false", "False", "FALSE"):
        return False
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        inner = s[1:-1]
        return inner.replace("''", "'") if s[0] == "'" else bytes(inner, "utf-8").decode("unicode_escape")
    if _INT.match(s):
        return int(s.replace("_", ""))
    if _FLOAT.match(s):
        return float(s.replace("_", ""))
    if s in (".inf", "+.inf"):
        return float("inf")
    if s == "-.inf":
        return float("-inf")
    if s.startswith("[") and s.endswith("]"):
        inner = s[1:-1].strip()
        return [] if not inner else [scalar(x) for x in _split_flow(inner)]
    if s == "{}":
        return {}
    return s


def _split_flow(s: str) -> list[str]:
    out, depth, cur, quote = [], 0, "", None
    for ch in s:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            cur += ch
        elif ch in "[{":
            depth += 1
            cur += ch
        elif ch in "]}":
            depth -= 1
            cur += ch
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def parse_block_yaml(text: str) -> Any:
    lines = []
    for raw in text.splitlines():
        if raw.strip() in ("---", "..."):
            continue
        line = _strip_comment(raw)
        if line.strip():
            if "\t" in line[: len(line) - len(line.lstrip())]:
                raise ValueError("tabs in indentation")
            lines.append((len(line) - len(line.lstrip(" ")), line.strip()))
    if not lines:
        return None
    value, pos = _parse_node(lines, 0, lines[0][0])
    if pos != len(lines):
        raise ValueError(f"unexpected indentation at line {pos + 1}")
    return value


def _split_key(content: str):
    quote = None
    for i, ch in enumerate(content):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == ":" and (i + 1 == len(content) or content[i + 1] == " "):
            key = content[:i].strip()
            key = scalar(key) if key[:1] in "'\"" else key
            return key, content[i + 1:].strip()
    return None, None


def _parse_node(lines, pos, indent):
    if lines[pos][1].startswith("- ") or lines[pos][1] == "-":
        out = []
        while pos < len(lines) and lines[pos][0] == indent and (lines[pos][1].startswith("- ") or lines[pos][1] == "-"):
            rest = lines[pos][1][1:].strip()
            if not rest:
                pos += 1
                if pos < len(lines) and lines[pos][0] > indent:
                    value, pos = _parse_node(lines, pos, lines[pos][0])
                else:
                    value = None
                out.append(value)
                continue
            key, val = _split_key(rest)
            if key is not None:  # "- key: value" starts a mapping inside the list
                sub = [(indent + 2, rest)]
                j = pos + 1
                while j < len(lines) and lines[j][0] > indent:
                    sub.append(lines[j])
                    j += 1
                value, _ = _parse_node(sub, 0, indent + 2)
                out.append(value)
                pos = j
            else:
                out.append(scalar(rest))
                pos += 1
        return out, pos
    out = {}
    while pos < len(lines) and lines[pos][0] == indent:
        key, val = _split_key(lines[pos][1])
        if key is None:
            raise ValueError(f"expected 'key: value' at line {pos + 1}")
        pos += 1
        if val == "" or val is None:
            if pos < len(lines) and (lines[pos][0] > indent or (lines[pos][0] == indent and lines[pos][1].startswith("-"))):
                value, pos = _parse_node(lines, pos, lines[pos][0])
            else:
                value = None
        elif val in ("|", ">", "|-", ">-"):
            block = []
            while pos < len(lines) and lines[pos][0] > indent:
                block.append(lines[pos][1])
                pos += 1
            value = ("\n" if val.startswith("|") else " ").join(block)
        else:
            value = scalar(val)
        out[key] = value
    if pos < len(lines) and lines[pos][0] > indent:
        raise ValueError(f"unexpected indentation at line {pos + 1}")
    return out, pos
