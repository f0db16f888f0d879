"""Numbers as a reader wants them: rates as percent, counts as integers, money with separators, seconds.

The kind of a value comes from its name (``fraud_rate``, ``alerts``, ``saved_vs_no_model``,
``job_seconds``, ...); the run page, the verdicts and the notebooks' small tables all use ``show``.
"""

import math
from typing import Any

RATE_WORDS = ("rate", "precision", "recall", "share", "pct_of")
MONEY_WORDS = ("cost", "saved", "money", "amount")
SCORE_WORDS = ("auprc", "auc", "roc", "threshold", "probability", "distance", "score", "logloss")
COUNT_WORDS = ("rows", "frauds", "alerts", "transactions", "results", "letters", "count", "positives", "negatives",
               "version", "iteration", "trees", "features", "blocks")  # fmt: skip


def kind(name: str) -> str:
    """``rate``, ``money``, ``score``, ``seconds``, ``ms``, ``per_s``, ``count`` or ``plain``, from a value's name."""
    name = "_" + name.lower()  # a bare kind ("ms", "per_s") reads like a name ending in it
    if name.endswith("_pp"):
        return "pp"
    if name.endswith("_pct"):
        return "pct"
    if name.endswith("_ms"):
        return "ms"
    if name.endswith("_per_s") or name.endswith("per_second"):
        return "per_s"
    if "seconds" in name or name.endswith("_s"):
        return "seconds"
    for label, words in (("score", SCORE_WORDS), ("rate", RATE_WORDS), ("money", MONEY_WORDS), ("count", COUNT_WORDS)):
        if any(word in name for word in words):
            return label
    return "plain"


def show(name: str, value: Any) -> str:
    """``value`` formatted for the reader by the kind ``name`` suggests."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, int | float):
        return str(value)
    style = kind(name)
    if style == "rate":
        return f"{100 * value:.2f} %" if abs(value) >= 1e-4 or value == 0 else f"{100 * value:.4f} %"
    if style == "pp":
        return f"{value:+.2f} pp"
    if style == "pct":
        return f"{value:+.2f} %" if name.lower().endswith("_vs_expected_pct") else f"{value:.2f} %"
    if style == "money":
        return f"{value:,.0f}"
    if style == "score":
        return f"{value:.4f}"
    if style == "seconds":
        return f"{value:,.1f} s"
    if style == "ms":
        return f"{value:,.1f} ms"
    if style == "per_s":
        return f"{value:,.0f}/s"
    if style == "count" or (isinstance(value, int) or float(value).is_integer()):
        return f"{round(value):,}"
    return f"{value:,.4g}"


def frame(data):
    """A pandas DataFrame (or Series) styled so that every column shows its values by its name's kind."""
    import pandas as pd

    data = data.to_frame() if isinstance(data, pd.Series) else data
    return data.style.format({column: (lambda v, c=str(column): show(c, v)) for column in data.columns})


def table(values: dict[str, Any], title: str = "value"):
    """A one-column pandas table of ``values``, each formatted by ``show`` (for a notebook cell)."""
    import pandas as pd

    return pd.DataFrame({title: {k: show(k, v) for k, v in values.items()}})
