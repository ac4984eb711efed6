"""The stored-subset finding of a scan, printed on stderr beside the verdict."""
from __future__ import annotations

from ..progress import console


def print_stored(result) -> None:
    from rich.markup import escape
    from rich.table import Table

    stored = result.stored
    base = stored.baseline or {}
    console.print(f"[bold]{escape(result.finding)}[/] · data-free stored-subset search: {stored.n_starts} starts "
                  f"({', '.join(f'{k} {v}' for k, v in stored.start_kinds.items())}), {len(stored.candidates)} "
                  f"low-entropy candidates, {stored.found} stored"
                  + (f" (typical basin at t0={base['t0']:g}: mean {base['mean']:.2f}, q95 {base['q95']:.2f})"
                     if base else ""), highlight=False, soft_wrap=True)
    low = {k: v for k, v in (stored.low_entropy_starts or {}).items() if v["n"]}
    if low:
        console.print("low-entropy starts (reported only, not a finding): " + ", ".join(
            f"{k} {v['n']} of {v['of']} below 0.6 × median {v['median_entropy']:.2f} nats" for k, v in low.items()),
            highlight=False, soft_wrap=True)
    shown = [c for c in stored.candidates if c["stored"]][:5]
    if not shown:
        return
    table = Table(title="stored sequences found without data (beside the verdict)")
    for col in ("tokens", "recurrence", "basin t0=0.25 / 0.5", "H (nats)", "text"):
        table.add_column(col)
    for c in shown:
        basins = " / ".join(f"{v:.2f}" for v in c["basin"].values())
        text = (c["text"] or " ".join(map(str, c["tokens"][:16])))[:70].replace("\n", "⏎")
        table.add_row(str(c["length"]), str(c["recurrence"]), basins, f"{c['mean_entropy']:.3f}", escape(text))
    console.print(table)
