"""Phase windows (idle, load, prefill, decode) on the trace's clock.

The runner marks the start and end of every step on the device clock. Inside
a step, the phases come from the inference process itself when it prints
them: melt's patched llama.cpp writes a ``melt-mark`` line on the device's
clock at each prefill and decode boundary (``source: process-marks``); for
llama-bench one window per timed repetition, so warm-ups and the untimed
context filling of ``depth > 0`` stay outside. The step's time before its
first window is ``load``.

Without marks (an unpatched or prebuilt binary) the windows are walked back
from the step's end mark, labelled as such: llama-bench's per-repetition
times (``samples_ns``, ``source: llama-bench-samples``) or llama.cpp's timing
lines printed at exit (``source: timings-at-exit``). A step named for a phase
(``prefill``, ``decode``) with neither is that phase as marked by the runner
(``source: marks``). :attr:`PhasePlan.method` says which way the job's
windows were found.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from melt.parsers.llama_bench import parse_llama_bench
from melt.parsers.llamacpp import parse_timings
from melt.parsers.marks import mark_windows, parse_marks
from melt.parsers.perplexity import evaluated_tokens

PHASE_NAMES = ("idle", "load", "prefill", "decode")


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float
    source: str = "marks"  # marks | process-marks | llama-bench-samples | timings-at-exit

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


#: How a job's phase windows were found (``PhasePlan.method``).
METHODS = {
    "process-marks": "marks printed by the inference process on the device clock",
    "walk-back": "fallback: durations from the process's output walked back from its exit mark",
    "runner-marks": "the runner's marks around each step (one process per phase)",
}


@dataclass
class PhasePlan:
    phases: list[Phase]
    tokens: dict[str, float]  # phase -> tokens processed in it
    method: str = "runner-marks"  # a key of METHODS


#: Marks may precede the runner's start mark or follow its end mark by this much (s).
_MARK_SLACK_S = 0.05


def _marked_windows(step: StepResult, clock: str, t0: float) -> tuple[list[Phase], dict[str, float]] | None:
    """Phases of one step from the process's own marks (``None`` when it printed none)."""
    marks = parse_marks(step.stderr) or parse_marks(step.stdout)
    if not marks:
        return None
    windows = mark_windows(marks, "boottime" if clock == "uptime" else "realtime")
    phases: list[Phase] = []
    tokens: dict[str, float] = {}
    for w in windows:
        start, end = w["start"] - t0, w["end"] - t0
        if start < step.start_s - _MARK_SLACK_S or end > step.end_s + _MARK_SLACK_S:
            continue  # not this step's (another clock, a stale line): never trust it
        phases.append(Phase(w["phase"], max(start, step.start_s), min(end, step.end_s), "process-marks"))
        if isinstance(w.get("tokens"), int) and w["tokens"] >= 0:
            tokens[w["phase"]] = tokens.get(w["phase"], 0.0) + w["tokens"]
    if not phases:
        return None
    phases.sort(key=lambda ph: ph.start_s)
    return phases, tokens


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


def derive_phases(idle: tuple[float, float] | None, steps: list[StepResult], *,
                  clock: str | None = None, t0_device_s: float | None = None) -> PhasePlan:
    """Phase windows and token counts for a job (see the module doc).

    ``clock`` (``realtime`` or ``uptime``) and ``t0_device_s`` place the
    process's marks on the trace's clock; without them marks are not read.
    """
    phases: list[Phase] = []
    tokens: dict[str, float] = {}
    used: set[str] = set()

    def add_tokens(found: dict[str, float], only: str | None = None) -> None:
        for k, v in found.items():
            if only is None or k == only:
                tokens[k] = tokens.get(k, 0.0) + v

    if idle is not None and idle[1] > idle[0]:
        phases.append(Phase("idle", idle[0], idle[1]))
    for i, step in enumerate(steps):
        marked = (_marked_windows(step, clock, t0_device_s)
                  if clock is not None and t0_device_s is not None else None)
        if marked and step.phase in ("prefill", "decode"):
            own = [p for p in marked[0] if p.name == step.phase]
            marked = (own, {k: v for k, v in marked[1].items() if k == step.phase}) if own else None
        if marked:
            used.add("process-marks")
            if i == 0 and marked[0][0].start_s > step.start_s:
                phases.append(Phase("load", step.start_s, marked[0][0].start_s, "marks"))
            phases.extend(marked[0])
            add_tokens(marked[1])
            continue
        if step.phase in ("prefill", "decode", "load"):
            found = _bench_windows(step) if step.phase != "load" else None
            own = [p for p in (found[0] if found else []) if p.name == step.phase]
            if found and own:
                used.add("walk-back")
                window = own[-1]
                if i == 0 and window.start_s > step.start_s:
                    phases.append(Phase("load", step.start_s, window.start_s, "marks"))
                phases.append(window)
                add_tokens(found[1], step.phase)
            else:
                used.add("runner-marks")
                phases.append(Phase(step.phase, step.start_s, step.end_s, "marks"))
                timing = _timing_windows(step)
                if timing:
                    add_tokens(timing[1], step.phase)
            continue
        derived = _timing_windows(step) or _bench_windows(step)
        if derived:
            used.add("walk-back")
            phases.extend(derived[0])
            add_tokens(derived[1])
            if derived[0] and derived[0][0].name != "load" and derived[0][0].start_s > step.start_s:
                phases.insert(len(phases) - len(derived[0]),
                              Phase("load", step.start_s, derived[0][0].start_s, "marks"))
        else:
            used.add("runner-marks")
            phases.append(Phase("run", step.start_s, step.end_s, "marks"))
            evaluated = evaluated_tokens(step.stderr) or evaluated_tokens(step.stdout)
            if evaluated:  # a quality job: every token of every chunk went through the model
                add_tokens({"run": evaluated})
    # the weakest way any step's windows were found names the job's method
    method = next((m for m in ("walk-back", "runner-marks", "process-marks") if m in used), "runner-marks")
    return PhasePlan([p for p in phases if p.end_s >= p.start_s], tokens, method)
