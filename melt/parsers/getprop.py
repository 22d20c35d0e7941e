"""Android ``getprop`` output (``getprop``).

``[key]: [value]`` lines, as printed by ``adb shell getprop`` (full dump or
piped through ``grep``). Values may span several lines (the closing ``]`` ends
them); blank lines and shell prompts are skipped. ``adb shell getprop KEY``
prints the bare value: when the text holds such a command followed by one
value line, that value is returned under ``KEY``.
"""

from __future__ import annotations

import re

_START = re.compile(r"^\s*\[(?P<key>[^\[\]\s]+)\]\s*:\s*\[(?P<rest>.*)$")
_SINGLE = re.compile(r"\bgetprop\s+(?P<key>[A-Za-z0-9_.\-]+)\s*$")


def parse_getprop(text: str) -> dict[str, str]:
    """Parse getprop output into ``{key: value}`` (strings, as printed).

    Returns ``{}`` when nothing matches. Never raises.
    """
    props: dict[str, str] = {}
    key: str | None = None
    buf: list[str] = []
    pending_single: str | None = None
    for line in str(text).splitlines():
        if key is not None:
            # inside a multi-line value: look for the closing bracket
            if line.rstrip().endswith("]"):
                buf.append(line.rstrip()[:-1])
                props[key] = "\n".join(buf)
                key, buf = None, []
            elif _START.match(line):
                props[key] = "\n".join(buf)
                key, buf = None, []
            else:
                buf.append(line)
                continue
        start = _START.match(line)
        if start:
            rest = start.group("rest").rstrip()
            if rest.endswith("]"):
                props[start.group("key")] = rest[:-1]
            else:
                key, buf = start.group("key"), [rest]
            pending_single = None
            continue
        single = _SINGLE.search(line)
        if single:
            pending_single = single.group("key")
            continue
        if pending_single and line.strip():
            props.setdefault(pending_single, line.strip())
            pending_single = None
    if key is not None:
        props[key] = "\n".join(buf)
    return props
