"""Markdown formatting shared by the report's sections."""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["md_table", "ci", "figure"]


def ci(low: float | None, high: float | None) -> str:
    """A 95% interval, or a note that one seed gives none."""
    if low is None or math.isnan(low):
        return "no interval (one seed)"
    return f"95% CI [{low:.2f}, {high:.2f}]"


def md_table(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A GitHub-style Markdown table (no extra dependency)."""
    def fmt(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def figure(folder: str, name: str, caption: str) -> str:
    """A figure of ``folder`` (relative to the report) with its caption below it."""
    return f"![{caption}]({folder}/{name}.png)\n\n*{caption}*\n"
