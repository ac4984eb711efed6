"""The exit codes, in one place (docs/exit-codes.md): the codes, the code of an exception, the gate
code of a verdict and the most severe of several codes. Standard library only, on the ground floor,
so that the entry point, the command layer, the verdict and the task backends (in this process or on
a Ray worker) all map a failure to the same code.
"""
from __future__ import annotations

import re

EXIT_OK = 0
EXIT_MEMORIZING = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3
EXIT_LOAD = 4
EXIT_RUNTIME = 5
EXIT_INTERRUPTED = 130

GATE_CODES = {"generalizing": EXIT_OK, "memorizing": EXIT_MEMORIZING, "inconclusive": EXIT_INCONCLUSIVE}
FAIL_ON = ("memorizing", "inconclusive", "stored-subset")
# The overall code of several results (multi-checkpoint scan): the first of these that any has.
SEVERITY = (EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_LOAD, EXIT_USAGE, EXIT_MEMORIZING, EXIT_INCONCLUSIVE, EXIT_OK)
OUT_OF_MEMORY = "out of memory; lower --batch-size or --samples"

# Exceptions of upper floors, known by (module prefix, class name) so this module imports none of them.
_BY_CLASS = {("memaudit.adapters", "LoadError"): EXIT_LOAD,
             ("memaudit.denoiser", "NonFiniteOutput"): EXIT_RUNTIME,
             ("memaudit.cli", "OutputError"): EXIT_RUNTIME}

# C0 and C1 controls, DEL, and the Unicode line/paragraph separators; ANSI/VT escape sequences first.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])|\x9b[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: object) -> str:
    """Any text made safe for the one-line contract: ANSI escape sequences removed, line breaks
    (\\n, \\r, U+0085, U+2028, U+2029) and tabs folded into spaces, other control characters shown
    as \\xNN / \\uNNNN, runs of spaces collapsed."""
    text = _ANSI.sub("", str(text))

    def visible(m: re.Match) -> str:
        c = m.group()
        if c in "\n\r\t\x0b\x0c\x85\u2028\u2029":
            return " "
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    return " ".join(_CONTROL.sub(visible, text).split(" ")).strip()


def code_of(e: BaseException) -> tuple[str, int]:
    """The one table from exceptions to (one-line message, exit code)."""
    from .errors import UsageError

    text = one_line(str(e))
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(e, UsageError):   # and its kinds: ScanError, RecoveryError, SweepError, RuleError, DataError …
        return text, EXIT_USAGE
    for cls in type(e).__mro__:
        for (module, name), code in _BY_CLASS.items():
            if cls.__name__ == name and cls.__module__.startswith(module):
                return (f"runtime failure: {text}" if name == "NonFiniteOutput" else text), code
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)):
        # torch's allocator raises RuntimeError("[enforce fail at alloc_cpu.cpp] … DefaultCPUAllocator:
        # can't allocate memory …"): the documented line, not torch's text
        return OUT_OF_MEMORY, EXIT_RUNTIME
    if isinstance(e, RecursionError):
        return "runtime failure: input nested too deeply (RecursionError)", EXIT_RUNTIME
    if isinstance(e, OSError) and e.errno == 36:   # ENAMETOOLONG: a path the user gave
        return f"path too long for the file system: {one_line(str(e.filename or ''))[:200]}…", EXIT_USAGE
    return f"runtime failure: {type(e).__name__}: {text}".rstrip(": "), EXIT_RUNTIME


def gate_exit_code(verdict: str, fail_on: str = "memorizing", exit_zero: bool = False,
                   stored_found: bool = False) -> int:
    """Exit code of a *completed* scan (errors have their own codes 2/4/5 and never reach here).

    fail_on="memorizing" (default): the code is the verdict's own: generalizing 0 (gate passed),
        memorizing 1 (gate failed), inconclusive 3 (not a pass; a pipeline can tolerate it
        explicitly, e.g. `|| [ $? -eq 3 ]`).
    fail_on="inconclusive": inconclusive also fails the gate and exits 1 like memorizing, for
        pipelines that read 1 as "policy failure" and any other non-zero code as "tool problem".
    fail_on="stored-subset": as "memorizing", and a stored-subset finding (memaudit.stored: the
        data-free search found stored sequences, or with --train training blocks restore above the
        model's own samples; `stored_found`) fails the gate too, exit 1.
    exit_zero=True: 0 whatever the verdict (report-only runs); it overrides fail_on.
    """
    if fail_on not in FAIL_ON:
        raise ValueError(f"fail_on must be one of {', '.join(FAIL_ON)} (got {fail_on!r})")
    if verdict not in GATE_CODES:
        raise ValueError(f"unknown verdict {verdict!r}")
    if exit_zero:
        return EXIT_OK
    if verdict == "inconclusive" and fail_on == "inconclusive":
        return EXIT_MEMORIZING
    if fail_on == "stored-subset" and stored_found:
        return EXIT_MEMORIZING
    return GATE_CODES[verdict]


def most_severe(codes) -> int:
    """The overall exit code of several results: 130 > 5 > 4 > 2 > 1 > 3 > 0."""
    codes = set(codes)
    return next((code for code in SEVERITY if code in codes), EXIT_OK if not codes else max(codes))
