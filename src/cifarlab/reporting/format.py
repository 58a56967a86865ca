"""Markdown formatting shared by the report's sections and figures.

Every number the report prints goes through ``num`` (fixed decimals) or ``compact``
(settings such as a learning rate), so a rule like "a value that rounds to zero prints as
0.00" holds in one place. Tables are written by ``pandas.DataFrame.to_markdown``
(tabulate); ``md_table`` only formats the cells first.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import pandas as pd

from ..models import shown_units  # the unit count lives with the first-layer registry

__all__ = ["num", "compact", "cell", "md_table", "ci", "figure", "readable_title",
           "shown_units", "first_layer_caption"]


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, numbers.Real) and math.isnan(float(x)))


def num(x: float | None, digits: int = 2, sign: bool = False) -> str:
    """``x`` with ``digits`` decimals ("" when missing); ``sign`` adds "+" to positives.

    A value that rounds to zero prints as plain zero ("0.00"), never "-0.00" or "+0.00":
    a sign on a zero suggests a direction the number does not have.
    """
    if _missing(x):
        return ""
    text = f"{float(x):{'+' if sign else ''}.{digits}f}"
    if float(text) == 0:
        return f"{0:.{digits}f}"
    return text


def compact(x: float | int | None) -> str:
    """A setting as people write it: integers as they are, small or large floats as
    ``1e-3`` / ``2.5e-4`` (no zero-padded exponent: "1e-03" is longer and an HTML cell
    may break it at the hyphen), other floats with ``:g``."""
    if _missing(x):
        return ""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return str(x)
    v = float(x)
    if v == 0:
        return "0"
    if v.is_integer() and abs(v) < 1e5:
        return str(int(v))
    if abs(v) < 1e-2 or abs(v) >= 1e5:
        mantissa, exponent = f"{v:.3e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{v:g}"


def cell(v: object, digits: int = 2) -> str:
    """One table cell: floats through ``num``, missing values empty, everything else as
    text with "|" escaped (it would end the Markdown cell)."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        return num(float(v), digits)
    if _missing(v) or v is pd.NA:
        return ""
    return str(v).replace("|", "\\|")


def md_table(df: pd.DataFrame, digits: int = 2, right: Sequence[str] = ()) -> str:
    """``df`` as a GitHub Markdown table, written by ``DataFrame.to_markdown``.

    Cells are formatted by ``cell`` first and tabulate's number parsing is switched off,
    so tabulate cannot reformat them (it would print -0.00 or 1e-03 again). Numeric
    columns, and the columns named in ``right`` (numbers already turned into text), are
    right-aligned, as GitHub renders ``---:``.
    """
    text = df.map(lambda v: cell(v, digits))
    align = ["right" if c in right or (pd.api.types.is_numeric_dtype(df[c])
                                       and not pd.api.types.is_bool_dtype(df[c]))
             else "left" for c in df.columns]
    return text.to_markdown(index=False, tablefmt="pipe", disable_numparse=True,
                            colalign=align)


def ci(low: float | None, high: float | None) -> str:
    """A 95% interval, or a note that one seed gives none."""
    if _missing(low) or _missing(high):
        return "no interval (one seed)"
    return f"95% CI [{num(low)}, {num(high)}]"


def figure(folder: str, name: str, caption: str) -> str:
    """A figure of ``folder`` (relative to the report) with its caption below it."""
    return f"![{caption}]({folder}/{name}.png)\n\n*{caption}*\n"


def readable_title(name: str) -> str:
    """A config key as a title: ``dropout_rate`` -> "Dropout rate" (figures and headings
    are read by people; the key stays in file names and in backticks in the text)."""
    words = name.replace("_", " ").replace(".", " ").split()
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def first_layer_caption(display: str, n_units: int, height: int, width: int) -> str:
    """Title of a first-layer figure, naming the number of units it really shows."""
    shown = shown_units(n_units, height, width)
    which = f"all {shown}" if shown == n_units else f"the first {shown} of {n_units}"
    kind = "filters" if height * width < 100 else "units"
    return (f"{display} first-layer weights as {height}x{width} colour images ({which} "
            f"{kind}, each scaled to its own range)")
