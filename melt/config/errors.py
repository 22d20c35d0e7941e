"""Turn pydantic validation errors into ``file: field.path: message`` lines."""

from __future__ import annotations

from pydantic import ValidationError

# Internal tags pydantic puts in error locations (union members, wrappers).
_NOISE = {"function-after", "function-before", "function-wrap", "list", "dict"}


def field_path(loc: tuple) -> str:
    """``("workloads", 1, "bench", "n_gen")`` -> ``workloads[1].n_gen``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part in _NOISE or part.startswith(("function-", "tagged-union["))):
            continue
        elif isinstance(part, str) and part in {"bench", "generate", "conversation"} and out.endswith("]"):
            continue  # discriminated-union tag: the user never wrote it
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _message(err: dict) -> str:
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "union_tag_invalid":
        return f"unknown kind '{ctx.get('tag')}' (expected one of: {ctx.get('expected_tags')})"
    msg = str(err.get("msg", "invalid"))
    return msg[len("Value error, ") :] if msg.startswith("Value error, ") else msg


def problems_from(exc: ValidationError) -> list[str]:
    """One ``field.path: message`` string per validation error."""
    return [f"{field_path(tuple(e['loc']))}: {_message(e)}" for e in exc.errors()]
