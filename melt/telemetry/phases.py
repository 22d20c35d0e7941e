"""Phase windows (idle, load, prefill, decode) on the trace's clock.

The runner marks the start and end of every step on the device clock. A step
whose name is a phase (``prefill``, ``decode``) is that phase; llama-bench's
own per-repetition times (``samples_ns`` in its JSON) narrow the window to the
timed repetitions, which run last in the process, and the first step's
remainder before them is ``load``. A single ``run`` step is split with what
its output says: llama.cpp's timing lines (load, prompt eval, eval) anchored
at the process exit, or llama-bench's pp and tg rows. Every phase records
where its edges came from (``source``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from melt.parsers.llama_bench import parse_llama_bench
from melt.parsers.llamacpp import parse_timings

PHASE_NAMES = ("idle", "load", "prefill", "decode")


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float
    source: str = "marks"  # marks | llama-bench-samples | timings-at-exit

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class StepResult:
    """One executed step of a job, with its marked window (t_s)."""

    index: int
    phase: str  # "run" for a single invocation, else the phase it measures
    start_s: float
    end_s: float
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


@dataclass
class PhasePlan:
    phases: list[Phase]
    tokens: dict[str, float]  # phase -> tokens processed in it


def _bench_rows(step: StepResult) -> list[dict[str, Any]]:
    return parse_llama_bench(step.stdout) or []


def _row_kind(row: dict[str, Any]) -> str | None:
    n_prompt, n_gen = row.get("n_prompt") or 0, row.get("n_gen") or 0
    if n_prompt > 0 and n_gen == 0:
        return "prefill"
    if n_gen > 0 and n_prompt == 0:
        return "decode"
    return None


def _bench_windows(step: StepResult) -> tuple[list[Phase], dict[str, float]] | None:
    """Phases of one llama-bench process from its rows' per-repetition times.

    Tests run in the order printed, each after a warm-up run; the last test
    ends just before the process exits. Walking back from the exit mark:
    each test's repetitions, then its warm-up (a full repetition for pp, one
    token for tg).
    """
    rows = [r for r in _bench_rows(step) if _row_kind(r) and r.get("samples_ns")]
    if not rows:
        return None
    phases: list[Phase] = []
    tokens: dict[str, float] = {}
    t = step.end_s
    for row in reversed(rows):
        kind = _row_kind(row)
        samples = row["samples_ns"]
        timed = sum(samples) / 1e9
        start = t - timed
        if start < step.start_s:
            return None
        phases.append(Phase(kind, start, t, "llama-bench-samples"))  # type: ignore[arg-type]
        per = (row.get("n_prompt") or 0) if kind == "prefill" else (row.get("n_gen") or 0)
        tokens[kind] = tokens.get(kind, 0.0) + per * len(samples)
        mean = timed / len(samples)
        warmup = mean if kind == "prefill" else mean / max(1, row.get("n_gen") or 1)
        t = max(step.start_s, start - warmup)
    phases.reverse()
    return phases, tokens


def _timing_windows(step: StepResult) -> tuple[list[Phase], dict[str, float]] | None:
    blocks = parse_timings(step.stderr) or parse_timings(step.stdout)
    if not blocks:
        return None
    t = blocks[-1]
    if t.get("prompt_ms") is None or t.get("decode_ms") is None:
        return None
    # The timings are printed right before exit: decode (eval plus sampling)
    # ends there, prefill (prompt eval) ends where decode starts.
    decode_s = (t["decode_ms"] + (t.get("sample_ms") or 0.0)) / 1000.0
    prefill_s = t["prompt_ms"] / 1000.0
    decode_start = max(step.start_s, step.end_s - decode_s)
    prefill_start = max(step.start_s, decode_start - prefill_s)
    phases = [
        Phase("load", step.start_s, prefill_start, "timings-at-exit"),
        Phase("prefill", prefill_start, decode_start, "timings-at-exit"),
        Phase("decode", decode_start, step.end_s, "timings-at-exit"),
    ]
    tokens = {}
    if t.get("prompt_tokens"):
        tokens["prefill"] = float(t["prompt_tokens"])
    if t.get("gen_tokens"):
        tokens["decode"] = float(t["gen_tokens"])
    return phases, tokens


def derive_phases(idle: tuple[float, float] | None, steps: list[StepResult]) -> PhasePlan:
    """Phase windows and token counts for a job (see the module doc)."""
    phases: list[Phase] = []
    tokens: dict[str, float] = {}
    if idle is not None and idle[1] > idle[0]:
        phases.append(Phase("idle", idle[0], idle[1]))
    for i, step in enumerate(steps):
        if step.phase in ("prefill", "decode", "load"):
            found = _bench_windows(step) if step.phase != "load" else None
            own = [p for p in (found[0] if found else []) if p.name == step.phase]
            if found and own:
                window = own[-1]
                if i == 0 and window.start_s > step.start_s:
                    phases.append(Phase("load", step.start_s, window.start_s, "marks"))
                phases.append(window)
                if step.phase in found[1]:
                    tokens[step.phase] = tokens.get(step.phase, 0.0) + found[1][step.phase]
            else:
                phases.append(Phase(step.phase, step.start_s, step.end_s, "marks"))
                timing = _timing_windows(step)
                if timing and step.phase in timing[1]:
                    tokens[step.phase] = tokens.get(step.phase, 0.0) + timing[1][step.phase]
            continue
        derived = _timing_windows(step) or _bench_windows(step)
        if derived:
            phases.extend(derived[0])
            for k, v in derived[1].items():
                tokens[k] = tokens.get(k, 0.0) + v
            if derived[0] and derived[0][0].name != "load" and derived[0][0].start_s > step.start_s:
                phases.insert(len(phases) - len(derived[0]),
                              Phase("load", step.start_s, derived[0][0].start_s, "marks"))
        else:
            phases.append(Phase("run", step.start_s, step.end_s, "marks"))
    return PhasePlan([p for p in phases if p.end_s >= p.start_s], tokens)
