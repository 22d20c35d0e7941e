"""Guess which kind of capture a text is.

Each kind has a few signature patterns; the kind whose signatures match most
strongly wins. The signatures are deliberately specific (a prefix, a header,
a structure) so that a llama.cpp log that happens to mention "tok/s" is not
taken for MLC output.
"""

from __future__ import annotations

import re

# kind -> [(pattern, weight)]; weights favour the most specific markers.
_SIGNATURES: dict[str, list[tuple[re.Pattern[str], int]]] = {
    "llama-bench": [
        (re.compile(r"^\s*\|\s*model\s*\|.*\|\s*(?:test|t/s)\s*\|", re.M | re.I), 20),
        (re.compile(r"\"avg_ts\"\s*:"), 20),
        (re.compile(r"^\s*\"?build_commit\"?,.*\bavg_ts\b", re.M), 20),
        (re.compile(r"INSERT INTO\s+\w+\s*\(\s*build_commit", re.I), 20),
        (re.compile(r"CREATE TABLE IF NOT EXISTS \w+\s*\(\s*build_commit", re.I), 10),
    ],
    "llama-perplexity": [
        (re.compile(r"Final estimate:\s*PPL\s*="), 30),
        (re.compile(r"^={4,} (?:Perplexity|KL divergence|Token probability) statistics ={4,}", re.M), 30),
        (re.compile(r"^\s*Mean PPL\(Q\)\s*:", re.M), 10),
        (re.compile(r"(?:calculating perplexity|kl_divergence: computing) over \d+ chunks"), 10),
    ],
    "melt-marks": [
        (re.compile(r"^melt-mark [a-z_]+ realtime=\d+\.\d+", re.M), 8),
    ],
    "llamacpp-timings": [
        (re.compile(r"(?:llama_print_timings|llama_perf_context_print|llama_perf_sampler_print|common_perf_print)\s*:"), 20),
        (re.compile(r"print_timings:.*eval time\s*="), 10),
        (re.compile(r"^(?:llama_model_loader|llm_load_print_meta|llama_model_load|llama_new_context_with_model|main: build)\b", re.M), 3),
    ],
    "mlc-stats": [
        (re.compile(r"\b(?:prefill|encode)\s*:\s*[\d.,]+\s*tok/s", re.I), 20),
        (re.compile(r"(?<!-)-{3,}\s*prefill\s*-{3,}", re.I), 20),
        (re.compile(r"prefill_rate\s+[\d.]+\s*tokens/sec"), 20),
        (re.compile(r"\bdecode_tokens_per_s\b|\bprefill_tokens_per_s\b"), 15),
        (re.compile(r"\[i:\s*\d+\]\s*decoding-time="), 20),
        (re.compile(r"mlc_chat|mlc_llm|mlc-llm|relax_vm"), 3),
    ],
    "tegrastats": [
        (re.compile(r"\bRAM\s+\d+/\d+\s*[kM]B\b.*\b(?:CPU|cpu)\s*\["), 25),
        (re.compile(r"\b(?:EMC_FREQ|GR3D_FREQ)\b"), 5),
    ],
    "dumpsys-battery": [
        (re.compile(r"Current Battery Service state:"), 25),
        (re.compile(r"^\s*(?:AC|USB|Wireless) powered:\s*(?:true|false)", re.M), 8),
        (re.compile(r"^\s*level:\s*\d+\s*$", re.M), 4),
    ],
    "power-supply-uevent": [
        (re.compile(r"^\s*POWER_SUPPLY_[A-Z_]+=", re.M), 20),
        (re.compile(r"^\s*(?:CAPACITY|VOLTAGE_NOW|CURRENT_NOW|STATUS|HEALTH|TEMP)=\S", re.M), 6),
    ],
    "dumpsys-thermalservice": [
        (re.compile(r"Current temperatures from HAL:"), 25),
        (re.compile(r"Temperature\{mValue="), 20),
        (re.compile(r"^\s*Thermal Status:\s*-?\d", re.M), 5),
    ],
    "thermal-zones": [
        (re.compile(r"thermal_zone\d+(?:/(?:temp|type))?\s*[:\t ]\s*\S"), 15),
        (re.compile(r"thermal_zone[\d*]+/(?:temp|type)"), 12),
        (re.compile(r"^\s*[\w-]*(?:-therm|thermal|tsens_tz_sensor\d+)[\w-]*\s*$", re.M | re.I), 3),
        # a bare `cat .../thermal_zone*/temp`: nothing but millidegree integers, two or more
        (re.compile(r"\A\s*(?:-?\d{4,6}[ \t]*\r?\n\s*)+-?\d{4,6}\s*\Z"), 6),
    ],
    "toybox-top": [
        (re.compile(r"^\W*PID\s+USER\s+.*(?:%CPU|CPU%)", re.M), 20),
        (re.compile(r"^\s*(?:PID|TID)\b.*(?:%CPU|CPU%).*\b(?:RES|RSS)\b", re.M), 18),
        (re.compile(r"^\s*Tasks:\s*\d+ total", re.M), 5),
        (re.compile(r"^\s*Threads:\s*\d+ total", re.M), 5),
        (re.compile(r"^\s*TID\s+USER\b.*(?:%CPU|CPU%)", re.M), 20),
    ],
    "dumpsys-meminfo": [
        (re.compile(r"\*\*\s*MEMINFO in pid"), 25),
        (re.compile(r"Applications Memory Usage"), 15),
        (re.compile(r"^\s*App Summary\s*$", re.M), 10),
        (re.compile(r"^\s*Native Heap\s+\d+", re.M), 8),
    ],
    "getprop": [
        (re.compile(r"^\s*\[[\w.\-]+\]\s*:\s*\[", re.M), 12),
        (re.compile(r"\bgetprop\s+[\w.\-]+\s*$", re.M), 8),
    ],
    "dumpsys-power": [
        (re.compile(r"^POWER MANAGER \(dumpsys power\)", re.M), 30),
        (re.compile(r"^\s*mWakefulness=\w+", re.M), 10),
        (re.compile(r"^\s*Display Power: state=\w+", re.M), 10),
    ],
    "odpm-energy": [
        (re.compile(r"CH\d+\(T=\d+\)\[[^\]]+\],\s*\d+"), 25),
        (re.compile(r"energy_value"), 8),
    ],
}


def score(text: str) -> dict[str, int]:
    """Return ``{kind: score}`` for every kind with a non-zero score.

    A signature counts its weight once, plus one per extra hit (capped), so a
    file full of tegrastats lines outscores a single stray marker.
    """
    text = str(text)[:2_000_000]
    scores: dict[str, int] = {}
    for kind, signatures in _SIGNATURES.items():
        total = 0
        for pattern, weight in signatures:
            hits = 0
            for _ in pattern.finditer(text):
                hits += 1
                if hits >= 20:
                    break
            if hits:
                total += weight + min(hits - 1, 10)
        if total:
            scores[kind] = total
    return scores


def detect_kind(text: str) -> str | None:
    """Return the most likely kind for ``text``, or ``None`` when nothing fits."""
    scores = score(text)
    if not scores:
        return None
    best = max(scores.items(), key=lambda item: item[1])
    return best[0] if best[1] >= 3 else None
