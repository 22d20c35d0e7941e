"""What each metric means for a verdict: its direction, its label, its floor.

This is the one place that says whether a bigger number is better. Anything
that judges metrics (statistics, regressions, history, the report) asks here.
"""

from __future__ import annotations

from dataclasses import dataclass

HIGHER_IS_BETTER = 1
LOWER_IS_BETTER = -1
NO_DIRECTION = 0

#: Default minimum relative effect for a regression (0.05 = 5 %).
DEFAULT_FLOOR = 0.05

#: What a ``quality`` job measures (llama-perplexity): one evaluation each, with its own
#: 95 % half-width in ``<metric>_u95`` when llama-perplexity prints one.
QUALITY_METRICS = (
    "perplexity",
    "kld_mean",
    "kld_median",
    "kld_p99",
    "same_top_p",
    "delta_p_rms",
    "ppl_ratio",
)

#: Metrics compared by ``melt compare`` when none are named.
DEFAULT_COMPARED = (
    "prefill_tps",
    "decode_tps",
    "ttft_ms",
    "ttft_est_ms",
    "itl_ms_p50",
    "energy_per_token_prefill_j",
    "energy_per_token_decode_j",
    "peak_rss_bytes",
    *QUALITY_METRICS,
)

#: Metrics shown in the report's summary table, in this order.
SUMMARY_METRICS = (
    "prefill_tps",
    "decode_tps",
    "ttft_ms",
    "ttft_est_ms",
    "itl_ms_p50",
    "energy_per_token_decode_j",
    "peak_rss_bytes",
    "temp_max_c",
    "perplexity",
    "kld_mean",
    "same_top_p",
)

# Exact names whose direction the suffix rules below would get wrong, or miss.
_EXACT: dict[str, int] = {
    "prompt_tokens": NO_DIRECTION,
    "gen_tokens": NO_DIRECTION,
    "sample_rate_hz": NO_DIRECTION,
    "temp_start_c": NO_DIRECTION,  # where the job started, not what it did
    "battery_drain_pct": LOWER_IS_BETTER,
    "avg_power_w": LOWER_IS_BETTER,
    "throttled": LOWER_IS_BETTER,
    "wall_s": LOWER_IS_BETTER,
    "requests": NO_DIRECTION,
    "turns": NO_DIRECTION,
    "conversations": NO_DIRECTION,
    "windows": NO_DIRECTION,
    "context_tokens_max": NO_DIRECTION,
    "transport_rtt_ms": NO_DIRECTION,  # the link to the device, not the model
    "decode_tps_sustained_ratio": HIGHER_IS_BETTER,
    "time_to_first_throttle_s": HIGHER_IS_BETTER,
    "peak_rss_bytes": LOWER_IS_BETTER,
    "scored_tokens": NO_DIRECTION,
    "perplexity": LOWER_IS_BETTER,
    "kld_mean": LOWER_IS_BETTER,
    "kld_median": LOWER_IS_BETTER,
    "kld_p99": LOWER_IS_BETTER,
    "kld_max": LOWER_IS_BETTER,  # judged on request only: one token decides it
    "reference_perplexity": NO_DIRECTION,  # the reference's, not the variant's
    "delta_p_rms": LOWER_IS_BETTER,
    "ppl_ratio": LOWER_IS_BETTER,  # quantized / reference: 1 is no loss
    "same_top_p": HIGHER_IS_BETTER,  # % of tokens whose top choice matches the reference
    "energy_impact_mean": LOWER_IS_BETTER,  # iOS's unitless energy-impact score
    "energy_impact_max": LOWER_IS_BETTER,
    "energy_impact_samples": NO_DIRECTION,
    "thermal_level_start": NO_DIRECTION,  # iOS's thermal state where the job started
    "thermal_level_end": LOWER_IS_BETTER,
}

# (prefix or suffix, direction), first match wins.
_SUFFIXES: tuple[tuple[str, int], ...] = (
    ("_u95", NO_DIRECTION),  # a figure's uncertainty, judged with its figure
    ("_tps_stddev", NO_DIRECTION),
    ("_tps", HIGHER_IS_BETTER),
    ("_ms", LOWER_IS_BETTER),
    ("_j", LOWER_IS_BETTER),
    ("_j_net", LOWER_IS_BETTER),
    ("_bytes", LOWER_IS_BETTER),
)
_PREFIXES: tuple[tuple[str, int], ...] = (
    ("true_energy_", NO_DIRECTION),  # the virtual device's own bookkeeping
    ("temp_", LOWER_IS_BETTER),
)

_LABELS: dict[str, str] = {
    "prefill_tps": "prefill tok/s",
    "decode_tps": "decode tok/s",
    "ttft_ms": "TTFT ms (measured)",
    "ttft_est_ms": "TTFT ms (estimate)",
    "itl_ms_p50": "ITL p50 ms",
    "itl_ms_p90": "ITL p90 ms",
    "itl_ms_p99": "ITL p99 ms",
    "e2e_ms": "end to end ms",
    "decode_tps_peak": "peak tok/s",
    "decode_tps_sustained": "sustained tok/s",
    "time_to_first_throttle_s": "time to throttle s",
    "load_ms": "load ms",
    "energy_per_token_decode_j": "decode J/token",
    "energy_per_token_prefill_j": "prefill J/token",
    "energy_per_token_run_j": "J/evaluated token",
    "energy_per_token_decode_j_net": "decode J/token (net of idle)",
    "energy_per_token_prefill_j_net": "prefill J/token (net of idle)",
    "peak_rss_bytes": "peak memory",
    "temp_max_c": "max temp °C",
    "avg_power_w": "avg power W",
    "perplexity": "perplexity",
    "kld_mean": "KLD mean",
    "kld_median": "KLD median",
    "kld_p99": "KLD p99",
    "same_top_p": "same top token %",
    "delta_p_rms": "RMS Δp",
    "ppl_ratio": "PPL ratio",
    "scored_tokens": "scored tokens",
    "energy_impact_mean": "energy impact (unitless)",
    "energy_impact_max": "max energy impact (unitless)",
}


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is better, 0 when neither."""
    if metric in _EXACT:
        return _EXACT[metric]
    for prefix, d in _PREFIXES:
        if metric.startswith(prefix):
            return d
    for suffix, d in _SUFFIXES:
        if metric.endswith(suffix):
            return d
    return NO_DIRECTION


def uncertainty_column(metric: str) -> str:
    """The column holding ``metric``'s own 95 % half-width (``kld_mean`` -> ``kld_mean_u95``)."""
    return f"{metric}_u95"


def is_known_metric(metric: str) -> bool:
    """True for a name melt measures or derives (an exact name, or one of the unit rules)."""
    return (metric in _EXACT or metric in _LABELS
            or any(metric.startswith(p) for p, _ in _PREFIXES)
            or any(metric.endswith(s) for s, _ in _SUFFIXES))


def known_metric_names() -> list[str]:
    """The metric names listed by name (for suggestions)."""
    return sorted({*_EXACT, *_LABELS, *DEFAULT_COMPARED})


def label(metric: str) -> str:
    """A short human label for ``metric`` (the raw name when none is known)."""
    return _LABELS.get(metric, metric)


@dataclass(frozen=True)
class MetricRule:
    """How one metric is judged: its direction and its minimum effect (a fraction)."""

    name: str
    direction: int
    floor: float = DEFAULT_FLOOR


def rules(metrics: list[str] | tuple[str, ...], floors: dict[str, float] | None = None,
          default_floor: float = DEFAULT_FLOOR) -> list[MetricRule]:
    """Rules for ``metrics``, skipping those without a direction.

    ``floors`` maps a metric name to its floor as a fraction (0.05 = 5 %).
    """
    floors = floors or {}
    out = []
    for m in metrics:
        d = direction(m)
        if d != NO_DIRECTION:
            out.append(MetricRule(m, d, float(floors.get(m, default_floor))))
    return out


def format_value(metric: str, value: float | None) -> str:
    """``value`` for display in ``metric``'s natural unit (bytes as MiB, ...)."""
    if value is None or value != value:  # NaN
        return "–"
    if metric.endswith("_bytes"):
        return f"{value / 2**20:.1f} MiB"
    if metric.endswith("_j") or metric.endswith("_j_net"):
        return f"{value:.4g}"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
