"""Markdown tables and cell texts, the one table builder every report uses."""

from __future__ import annotations


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """``head`` and ``rows`` as a Markdown table, one line each, without a trailing newline;
    cells are written as given (escape them with ``escape_cell``)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def escape_cell(text: object, limit: int | None = None) -> str:
    """``text`` fit for one table cell: ``|`` escaped, newlines as spaces, cut to ``limit`` characters."""
    escaped = str(text).replace("|", "\\|").replace("\n", " ")
    return escaped if limit is None else escaped[:limit]


def format_mean_std(agg: dict, digits: int = 1, unit: str = "") -> str:
    """A ``tradeoff.mean_std`` aggregate as ``"71.2 ± 1.3"``, ``"71.2"`` (one value), ``"... (2/3 seeds)"``
    (some None), ``"not reached"`` (all None) or ``"—"`` (no values)."""
    if agg["of"] == 0:
        return "—"
    if agg["n"] == 0:
        return "not reached"
    text = f"{agg['mean']:.{digits}f}" + (f" ± {agg['std']:.{digits}f}" if agg["std"] is not None else "") + unit
    return text + (f" ({agg['n']}/{agg['of']} seeds)" if agg["n"] < agg["of"] else "")
