"""What a worker host remembers of the job messages it took: refuses replays, counts redeliveries.

A signed job message can be copied off the broker and sent again. The
worker host keeps each message id it took, with its expiry, in SQLite
(``<cache>/farm/messages.db``, on the worker's own disk, not in the broker):

- a message whose job finished is refused when it comes again (a replay);
- a message delivered again before its job finished (the process running it
  died, Celery gave the message back) is counted: the caller runs it again
  once, then gives up (:data:`melt.farm.task.MAX_DELIVERIES`);
- an id is forgotten when its message expires, after which the signature
  check refuses the message anyway.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from melt.farm.signing import MessageRefused


def default_path() -> Path:
    from melt.store.paths import cache_dir

    return cache_dir() / "farm" / "messages.db"


class SeenMessages:
    """The job message ids this host took (see the module doc)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, expires REAL NOT NULL, "
                         "deliveries INTEGER NOT NULL, done INTEGER NOT NULL)")

    def deliver(self, message_id: str, expires: float) -> int:
        """Count one delivery of ``message_id``; returns how many there were, this one included.

        Raises :class:`~melt.farm.signing.MessageRefused` when its job already finished.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM messages WHERE expires < ?", (time.time(),))
            row = db.execute("SELECT deliveries, done FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is not None and row[1]:
                raise MessageRefused(f"message {message_id[:16]} was already run on this host (a replay)")
            deliveries = (row[0] if row else 0) + 1
            db.execute("INSERT INTO messages (id, expires, deliveries, done) VALUES (?, ?, ?, 0) "
                       "ON CONFLICT(id) DO UPDATE SET deliveries = excluded.deliveries",
                       (message_id, float(expires), deliveries))
            db.execute("COMMIT")
            return deliveries
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def finish(self, message_id: str) -> None:
        """Mark ``message_id``'s job finished: the message is refused from now on."""
        self._db.execute("UPDATE messages SET done = 1 WHERE id = ?", (message_id,))

    def close(self) -> None:
        self._db.close()
