"""What a melt trace file must be: a JSON Schema of the Trace Event Format parts melt writes, and the
rules a schema cannot state.

The schema is written from Google's "Trace Event Format" document (the JSON
object form; https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU),
for the events melt emits only:

- the object form: ``traceEvents`` (an array of events), ``displayTimeUnit``
  (``"ms"`` or ``"ns"``), ``otherData`` (metadata: a dictionary of strings);
- complete events, ``ph: "X"``: ``name``, ``cat``, ``pid``, ``tid``, ``ts``
  (microseconds) and ``dur`` (microseconds, the event's length), ``args``;
- counter events, ``ph: "C"``: ``name``, ``pid``, ``ts`` and ``args``, a
  dictionary of series names to numeric values, one or more;
- metadata events, ``ph: "M"``: ``process_name`` and ``thread_name``
  (``args.name``), ``process_labels`` (``args.labels``),
  ``process_sort_index`` (``args.sort_index``, an integer).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

_ID = {"type": "integer", "minimum": 0}
_TIME = {"type": "number"}

_COMPLETE = {
    "type": "object",
    "required": ["name", "ph", "ts", "dur", "pid", "tid"],
    "properties": {
        "name": {"type": "string"}, "cat": {"type": "string"}, "ph": {"const": "X"},
        "ts": _TIME, "dur": {"type": "number", "minimum": 0}, "pid": _ID, "tid": _ID,
        "args": {"type": "object"},
    },
    "additionalProperties": False,
}

_COUNTER = {
    "type": "object",
    "required": ["name", "ph", "ts", "pid", "args"],
    "properties": {
        "name": {"type": "string", "minLength": 1}, "ph": {"const": "C"}, "ts": _TIME, "pid": _ID,
        "tid": _ID, "args": {"type": "object", "minProperties": 1,
                             "additionalProperties": {"type": "number"}},
    },
    "additionalProperties": False,
}


def _metadata(name: str, key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "ph", "pid", "args"],
        "properties": {
            "name": {"const": name}, "ph": {"const": "M"}, "pid": _ID, "tid": _ID,
            "args": {"type": "object", "required": [key], "properties": {key: value},
                     "additionalProperties": False},
        },
        "additionalProperties": False,
    }


_METADATA = {"oneOf": [
    _metadata("process_name", "name", {"type": "string"}),
    _metadata("thread_name", "name", {"type": "string"}),
    _metadata("process_labels", "labels", {"type": "string"}),
    _metadata("process_sort_index", "sort_index", {"type": "integer"}),
]}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Trace Event Format, JSON object form (the parts melt writes)",
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "traceEvents": {"type": "array", "items": {
            "type": "object",
            "required": ["ph"],
            "properties": {"ph": {"enum": ["X", "C", "M"]}},
            "allOf": [
                {"if": {"properties": {"ph": {"const": "X"}}}, "then": _COMPLETE},
                {"if": {"properties": {"ph": {"const": "C"}}}, "then": _COUNTER},
                {"if": {"properties": {"ph": {"const": "M"}}}, "then": _METADATA},
            ],
        }},
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} in the trace: JSON has no such number")


def load(text: str) -> dict[str, Any]:
    """Parse a trace file, refusing ``NaN``/``Infinity`` (Python writes them, JSON has none)."""
    return json.loads(text, parse_constant=_no_constant)


def validate(trace: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``trace`` matches :data:`SCHEMA`."""
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(trace)


def problems(trace: dict[str, Any]) -> list[str]:
    """What breaks the rules beyond the schema, in words (empty: none).

    - every number is finite;
    - every process has a name;
    - on each counter track (pid, name) ``ts`` never goes back;
    - every slice has ``dur >= 0`` and lies inside its process's span: from
      the job's start mark (0: the clock's origin) to its last counter
      reading, when it has any (a slow channel's first reading may come a
      few ticks after the first phase starts).
    """
    out: list[str] = []

    def finite(value: Any, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            out.append(f"{where}: {value}")
        elif isinstance(value, dict):
            for k, v in value.items():
                finite(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                finite(v, f"{where}[{i}]")

    finite(trace, "trace")
    events = trace.get("traceEvents", [])
    named = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    last: dict[tuple[int, str], float] = {}
    span: dict[int, list[float]] = defaultdict(lambda: [math.inf, -math.inf])
    for e in events:
        if e.get("pid") not in named:
            out.append(f"process {e.get('pid')} has no process_name")
            named.add(e.get("pid"))
        if e.get("ph") == "C":
            key = (e["pid"], e["name"])
            if e["ts"] < last.get(key, -math.inf):
                out.append(f"counter {key} goes back in time at ts={e['ts']}")
            last[key] = e["ts"]
            lo_hi = span[e["pid"]]
            lo_hi[0], lo_hi[1] = min(lo_hi[0], e["ts"], 0.0), max(lo_hi[1], e["ts"])
    for e in events:
        if e.get("ph") != "X":
            continue
        if e["dur"] < 0:
            out.append(f"slice {e['name']!r} of process {e['pid']} has dur {e['dur']}")
        if e["pid"] in span:
            lo, hi = span[e["pid"]]
            if e["ts"] < lo or e["ts"] + e["dur"] > hi:
                out.append(f"slice {e['name']!r} of process {e['pid']} ({e['ts']}..{e['ts'] + e['dur']}) "
                           f"is outside its span ({lo}..{hi})")
    return out
