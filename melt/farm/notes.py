"""Reading a run's notes off the broker, as the submitter does: bounded, verified, checked.

Each item of ``melt:farm:run:<run_id>`` is ``{"job": JOB_ID, "env":
ENVELOPE}`` (:func:`melt.farm.task.encode_note`). Everything in it is
another host's word, so:

- an item over the size limit is removed by Redis itself and never sent to
  melt (:func:`bounded_pop`); only its first bytes come back, to say which
  job it claimed to be;
- the envelope must verify under this farm's key, as a note of this run
  (:func:`open_note`);
- a record must name the job of its note, have a known status and bring only
  known file names, whose data is decompressed within bounds
  (:func:`record_from_note`); anything else turns into a failed record with
  the reason. The store checks every name again before it writes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from melt.errors import MeltError
from melt.farm.signing import FarmKeys, MessageRefused, verify
from melt.farm.task import unpack_files
from melt.runner.matrix import Job
from melt.runner.records import failed_record
from melt.store.paths import JOB_FILE_NAMES

# Pops the list's first item, unless it is over ARGV[1] bytes: then it is dropped and only its
# size and first bytes are returned, so a huge item is never sent to the client.
_POP = """
local item = redis.call('LINDEX', KEYS[1], 0)
if not item then return nil end
redis.call('LPOP', KEYS[1])
if string.len(item) > tonumber(ARGV[1]) then
  return {'too-large', string.len(item), string.sub(item, 1, 64)}
end
return item
"""
_HINT = re.compile(r'^\{"job": "([0-9a-f]{16})"')


@dataclass(frozen=True)
class TooLarge:
    """A note dropped unread: its size, and the job id its first bytes name (if any)."""

    size: int
    job_hint: str | None


def bounded_pop(client: Any, key: str, max_bytes: int) -> str | TooLarge | None:
    """The first item of list ``key``, a :class:`TooLarge` for one over ``max_bytes``, or ``None``."""
    reply = client.eval(_POP, 1, key, max_bytes)
    if reply is None:
        return None
    if isinstance(reply, list):
        hint = _HINT.match(reply[2] if isinstance(reply[2], str) else reply[2].decode("utf-8", "replace"))
        return TooLarge(int(reply[1]), hint.group(1) if hint else None)
    return reply if isinstance(reply, str) else reply.decode("utf-8", "replace")


def open_note(raw: str, keys: FarmKeys, run_id: str) -> dict[str, Any]:
    """The body of one note of run ``run_id``, verified; :class:`FarmError` otherwise."""
    try:
        item = json.loads(raw)
    except ValueError:
        raise MessageRefused("the note is not JSON") from None
    envelope = verify(item.get("env") if isinstance(item, dict) else None, "note", keys)
    body = envelope["body"]
    if body.get("run_id") != run_id:
        raise MessageRefused(f"the note belongs to run {str(body.get('run_id'))[:40]!r}, not {run_id}")
    return body


def record_from_note(job: Job, note: dict[str, Any]) -> dict[str, Any]:
    """The record a verified ``record`` note brings for ``job`` (files under ``_files``),
    or a failed record saying why it was refused."""
    record = note.get("record")
    if not isinstance(record, dict):
        return failed_record(job, "its worker's note holds no record")
    if record.get("job_id") != job.job_id:
        return failed_record(job, f"its worker's record names job {str(record.get('job_id'))[:80]!r}, "
                                  f"not {job.job_id}; nothing of it was stored")
    if record.get("status") not in ("ok", "failed"):
        return failed_record(job, f"its worker's record has the status {str(record.get('status'))[:40]!r}")
    packed = note.get("files") or {}
    if not isinstance(packed, dict):
        return failed_record(job, "its worker's files are not a mapping of names to data")
    bad = [str(name)[:80] for name in packed if name not in JOB_FILE_NAMES]
    if bad:
        return failed_record(job, f"its worker sent the file {bad[0]!r}, not one of a job's files "
                                  f"({', '.join(sorted(JOB_FILE_NAMES))}); nothing of it was stored")
    try:
        files = unpack_files(packed)
    except MeltError as exc:
        return failed_record(job, f"its worker's files were refused: {exc}; nothing of it was stored")
    record = {k: v for k, v in record.items() if k != "_files"}
    record["_files"] = files
    return record
