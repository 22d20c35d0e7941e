"""llama.cpp's ``llama-perplexity`` output: perplexity and, in KL-divergence mode, the statistics block.

Plain mode ends with ``Final estimate: PPL = 2.1543 +/- 0.13603`` (in the
log, which may share the line with the last pass's ETA). KL-divergence mode
(``--kl-divergence-base FILE --kl-divergence``) prints three blocks instead::

    ====== Perplexity statistics ======
    Mean PPL(Q)                   :   2.154267 ±   0.136029
    Mean PPL(Q)/PPL(base)         :   1.000000 ±   0.000004
    ====== KL divergence statistics ======
    Mean    KLD:   0.000001 ±   0.000001
    99.0%   KLD:   0.000035
    Median  KLD:  -0.000000
    ====== Token probability statistics ======
    RMS Δp    :  0.001 ± 0.000 %
    Same top p: 100.000 ± 0.000 %

The ± llama-perplexity prints is one standard error; melt stores 95% half
widths (``*_u95`` = 1.96 x it). llama-perplexity scores the second half of
each chunk (the first half is context), so ``scored_tokens`` is
``chunks x (n_ctx - n_ctx // 2)`` from its ``over N chunks, n_ctx=C`` line.
"""

from __future__ import annotations

import re

from melt.parsers._num import NUMBER, to_float

Z95 = 1.96

# "_" stands for "±" in captures whose encoding was lost on the way (Δ too: "RMS _p")
_PM = r"\s*(?:±|\+/-|_)\s*"
_FINAL = re.compile(rf"Final estimate:\s*PPL\s*=\s*(?P<v>{NUMBER}|nan|inf){_PM}(?P<e>{NUMBER}|nan|inf)", re.I)
_CHUNKS = re.compile(r"(?:calculating perplexity|computing) over (?P<n>\d+) chunks, n_ctx=(?P<c>\d+)")
_STAT = re.compile(rf"^\s*(?P<name>[^:\n]+?)\s*:\s*(?P<v>{NUMBER}|nan|-?inf)\s*%?(?:{_PM}(?P<e>{NUMBER}|nan|inf)\s*%?)?\s*$",
                   re.M)

# a line's label (spaces collapsed) -> (metric, whether its ± is stored as the metric's _u95)
_KLD_LINES: dict[str, tuple[str, bool]] = {
    "Mean PPL(Q)": ("perplexity", True),
    "Mean PPL(base)": ("reference_perplexity", True),
    "Mean PPL(Q)/PPL(base)": ("ppl_ratio", True),
    "Mean KLD": ("kld_mean", True),
    "Maximum KLD": ("kld_max", False),
    "99.0% KLD": ("kld_p99", False),
    "Median KLD": ("kld_median", False),
    "RMS Δp": ("delta_p_rms", True),
    "Same top p": ("same_top_p", True),
}


def evaluated_tokens(text: str) -> float | None:
    """Tokens llama-perplexity ran through the model (chunks x n_ctx, context included), or ``None``."""
    found = list(_CHUNKS.finditer(str(text)))
    return float(int(found[-1].group("n")) * int(found[-1].group("c"))) if found else None


def parse_perplexity(text: str) -> dict[str, float]:
    """Metrics of one llama-perplexity run (stdout and stderr together).

    Keys: ``perplexity``, ``perplexity_u95``, ``scored_tokens`` and, in
    KL-divergence mode, ``kld_mean``, ``kld_mean_u95``, ``kld_median``,
    ``kld_p99``, ``kld_max``, ``same_top_p`` (percent), ``same_top_p_u95``,
    ``delta_p_rms`` (percent), ``delta_p_rms_u95``, ``ppl_ratio``,
    ``ppl_ratio_u95``, ``reference_perplexity`` and its ``_u95``. A figure
    printed as nan or inf is left out. Never raises: without a final
    estimate or a statistics block the result is ``{}``.
    """
    text = str(text)
    out: dict[str, float] = {}
    chunks = list(_CHUNKS.finditer(text))
    if chunks:
        n, ctx = int(chunks[-1].group("n")), int(chunks[-1].group("c"))
        out["scored_tokens"] = float(n * (ctx - ctx // 2))
    if "====== KL divergence statistics" in text or "====== Perplexity statistics" in text:
        for m in _STAT.finditer(text):
            label = " ".join(m.group("name").split()).replace("_p", "Δp")
            if label not in _KLD_LINES:
                continue
            metric, with_u = _KLD_LINES[label]
            value = to_float(m.group("v"))
            if value is None:
                continue
            out[metric] = value
            err = to_float(m.group("e")) if m.group("e") else None
            if with_u and err is not None:
                out[f"{metric}_u95"] = Z95 * err
    finals = list(_FINAL.finditer(text))
    if finals and "perplexity" not in out:
        value, err = to_float(finals[-1].group("v")), to_float(finals[-1].group("e"))
        if value is not None:
            out["perplexity"] = value
            if err is not None:
                out["perplexity_u95"] = Z95 * err
    return out if "perplexity" in out else {}
