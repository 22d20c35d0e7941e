"""The farm key, and the signed envelopes every farm message travels in.

Job messages (submitter -> worker) and notes (worker -> submitter) are
signed with HMAC-SHA256 under a farm key shared by the farm's hosts, which
is not the broker password: a host that can reach Redis (or a copy of its
password) cannot make a worker run anything or a submitter store anything.

An envelope::

    {"v": 1, "purpose": "job" | "note", "kid": KEY_ID, "id": MESSAGE_ID,
     "iat": ISSUED_AT, "exp": EXPIRES_AT, "body": {...}, "sig": HEX}

``sig`` is the HMAC of the canonical JSON of everything else (sorted keys,
no spaces, ASCII), checked in constant time. ``id`` is random per message:
a worker keeps the ids of jobs it ran until they expire
(:mod:`melt.farm.replay`), so a copy of a signed message is not run again.

The key comes from ``$MELT_FARM_KEY`` (the key itself), else the file named
by ``$MELT_FARM_KEY_FILE``, else ``<config>/farm.key`` (``melt farm key
new`` makes one). A key file may hold several keys, one a line: the first
signs, every one verifies, which is how a key is rotated (docs/farm.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from melt.farm.app import FarmError

KEY_ENV = "MELT_FARM_KEY"
KEY_FILE_ENV = "MELT_FARM_KEY_FILE"
#: Shortest key accepted (characters); ``melt farm key new`` makes 64 hex digits.
MIN_KEY_CHARS = 32
#: How long a signed message stays valid: a job may wait this long in its queue (s).
MESSAGE_TTL_S = 7 * 24 * 3600
#: Clocks of farm hosts may differ by this much (s).
CLOCK_SKEW_S = 300
#: The largest job message a worker verifies (bytes of canonical JSON).
MAX_JOB_MESSAGE_BYTES = 4 * 1024 * 1024

HOW_TO_SET = (f"run `melt farm key new` and copy the file it writes to every farm host, or set {KEY_ENV} "
              "(see docs/farm.md)")


class FarmKeyError(FarmError):
    """No usable farm key is configured on this host."""


class MessageRefused(FarmError):
    """A farm message is unsigned, wrongly signed, expired, replayed or malformed."""


@dataclass(frozen=True)
class FarmKeys:
    """This host's farm keys: the first signs, each one verifies. ``where`` says where they came from."""

    keys: tuple[bytes, ...]
    where: str

    @property
    def signing(self) -> bytes:
        return self.keys[0]

    def by_id(self, kid: str) -> bytes | None:
        return next((k for k in self.keys if hmac.compare_digest(key_id(k), kid)), None)


def key_id(key: bytes) -> str:
    """A short public name of ``key`` (it reveals nothing of the key), so a verifier picks the right one."""
    return hashlib.sha256(b"melt-farm-key-id:" + key).hexdigest()[:12]


def default_key_file() -> Path:
    """``$MELT_FARM_KEY_FILE``, else ``farm.key`` in melt's config folder."""
    from melt.store.paths import config_dir

    env = os.environ.get(KEY_FILE_ENV)
    return Path(env).expanduser() if env else config_dir() / "farm.key"


def _parse(lines: list[str], where: str) -> tuple[bytes, ...]:
    keys = tuple(line.strip().encode() for line in lines if line.strip() and not line.strip().startswith("#"))
    if not keys:
        raise FarmKeyError(f"no farm key in {where}: {HOW_TO_SET}")
    short = [i for i, k in enumerate(keys) if len(k) < MIN_KEY_CHARS]
    if short:
        raise FarmKeyError(f"the farm key in {where} is shorter than {MIN_KEY_CHARS} characters: "
                           "make one with `melt farm key new`")
    return keys


def load_keys(broker_url: str | None = None) -> FarmKeys:
    """This host's farm keys (see the module doc), refused if one is the broker's password.

    Raises :class:`FarmKeyError` (one line, saying how to set a key).
    """
    env = os.environ.get(KEY_ENV)
    if env:
        keys, where = _parse(env.split(","), f"${KEY_ENV}"), f"${KEY_ENV}"
    else:
        path = default_key_file()
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FarmKeyError(f"no farm key ({path} does not exist and {KEY_ENV} is not set): "
                               f"{HOW_TO_SET}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise FarmKeyError(f"cannot read the farm key {path}: {exc}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise FarmKeyError(f"the farm key {path} is readable by others: chmod 600 {path}")
        keys, where = _parse(text.splitlines(), str(path)), str(path)
    password = _password(broker_url)
    if password and any(hmac.compare_digest(k, password.encode()) for k in keys):
        raise FarmKeyError(f"the farm key in {where} is the broker's password: the key must be a secret "
                           "of its own (`melt farm key new`)")
    return FarmKeys(keys, where)


def _password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
        return unquote(parts.password) if parts.password else None
    except ValueError:
        return None


def new_key_file(path: Path | None = None, *, rotate: bool = False) -> Path:
    """Write a new random key to ``path`` (default :func:`default_key_file`), mode 0600.

    ``rotate`` keeps the keys already there below the new one (they still
    verify; the new one signs). Without it an existing file is refused.
    Raises :class:`FarmKeyError`.
    """
    path = Path(path) if path is not None else default_key_file()
    old: list[str] = []
    if path.exists():
        if not rotate:
            raise FarmKeyError(f"{path} already holds a farm key: use --rotate to add a new one in front of it")
        old = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join([secrets.token_hex(32), *old]) + "\n")
    os.replace(tmp, path)
    return path


def canonical(obj: Any) -> bytes:
    """The bytes a signature covers: JSON with sorted keys, no spaces, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _mac(key: bytes, unsigned: dict[str, Any]) -> str:
    return hmac.new(key, canonical(unsigned), hashlib.sha256).hexdigest()


def sign(body: dict[str, Any], purpose: str, keys: FarmKeys, *, ttl_s: float = MESSAGE_TTL_S,
         now: float | None = None) -> dict[str, Any]:
    """``body`` in a signed envelope for ``purpose`` (``job`` or ``note``), valid for ``ttl_s`` seconds."""
    now = time.time() if now is None else now
    body = json.loads(json.dumps(body, default=str))  # exactly what the receiver will parse
    unsigned = {"v": 1, "purpose": purpose, "kid": key_id(keys.signing), "id": secrets.token_hex(16),
                "iat": round(now, 3), "exp": round(now + ttl_s, 3), "body": body}
    return {**unsigned, "sig": _mac(keys.signing, unsigned)}


def verify(envelope: Any, purpose: str, keys: FarmKeys, *, now: float | None = None,
           max_bytes: int | None = None) -> dict[str, Any]:
    """The checked envelope (its ``body``, ``id``, ``exp``), or :class:`MessageRefused` saying why.

    Checked: the shape, the key id, the signature (constant time), the
    purpose, the expiry (with :data:`CLOCK_SKEW_S` of slack) and, with
    ``max_bytes``, the size. Replays are the caller's to refuse, by ``id``.
    """
    if not isinstance(envelope, dict) or "sig" not in envelope:
        raise MessageRefused("the message is not signed (no farm envelope)")
    unsigned = {k: v for k, v in envelope.items() if k != "sig"}
    if set(unsigned) != {"v", "purpose", "kid", "id", "iat", "exp", "body"} or unsigned.get("v") != 1:
        raise MessageRefused("the message is not a farm envelope of version 1")
    sig, kid = envelope["sig"], unsigned["kid"]
    if not isinstance(sig, str) or not isinstance(kid, str) or not isinstance(unsigned["body"], dict):
        raise MessageRefused("the message's envelope is malformed")
    key = keys.by_id(kid)
    if key is None:
        raise MessageRefused(f"the message is signed with a key this host does not hold (key id {kid[:12]!r})")
    blob = canonical(unsigned)
    if max_bytes is not None and len(blob) > max_bytes:
        raise MessageRefused(f"the message is {len(blob):,} bytes, over the limit of {max_bytes:,}")
    if not hmac.compare_digest(hmac.new(key, blob, hashlib.sha256).hexdigest(), sig):
        raise MessageRefused("the message's signature does not match (altered, or signed with another key)")
    if unsigned["purpose"] != purpose:
        raise MessageRefused(f"the message is a {str(unsigned['purpose'])[:20]!r} message, not a {purpose!r} one")
    now = time.time() if now is None else now
    iat, exp = unsigned["iat"], unsigned["exp"]
    if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) or not isinstance(unsigned["id"], str):
        raise MessageRefused("the message's envelope is malformed")
    if exp < now - CLOCK_SKEW_S:
        raise MessageRefused(f"the message expired {now - exp:.0f} s ago")
    if iat > now + CLOCK_SKEW_S or exp - iat > MESSAGE_TTL_S + CLOCK_SKEW_S:
        raise MessageRefused("the message's times are not plausible (issued in the future, or valid too long)")
    return unsigned
