"""Deterministic JSON that satisfies a JSON Schema: tool arguments and structured replies.

Clients such as Codex and the Agents SDK parse a tool call's arguments against the tool's schema
and a structured reply against the requested one, so the fakes answer with an instance of the
schema they were given instead of a fixed object.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.simulated.directives import TOOL_INPUT, Reply

_SAMPLE_STRING = "simulated"
_MAX_DEPTH = 6


def sample_instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """The smallest plausible value of ``schema``: required properties only, one array item.
    ``root`` is the document that local ``$ref``s point into (pydantic puts models in ``$defs``)."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return _SAMPLE_STRING
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return sample_instance(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = schema.get("required")
        names = required if isinstance(required, list) else list(props)
        return {n: sample_instance(props.get(n), root, depth + 1) for n in names}
    if kind == "array":
        return [sample_instance(schema.get("items"), root, depth + 1)]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _SAMPLE_STRING


def _resolve(schema: Any, root: Any) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def tool_input(schema: Any) -> dict[str, Any]:
    """Arguments for a tool with this parameters schema (the fixed input when it has none)."""
    if not isinstance(schema, dict) or not schema.get("properties"):
        return dict(TOOL_INPUT)
    value = sample_instance(schema)
    return value if isinstance(value, dict) else dict(TOOL_INPUT)


def json_reply(schema: Any) -> Reply:
    """A structured reply; its words (split on the spaces of ``json.dumps``) are its tokens."""
    value = sample_instance(schema) if isinstance(schema, dict) else {"result": "ok"}
    return Reply(tuple(json.dumps(value).split(" ")), "stop")


def argument_parts(arguments: str) -> tuple[str, str]:
    """Arguments in two pieces, so streaming clients reassemble them from several deltas."""
    middle = len(arguments) // 2
    return arguments[:middle], arguments[middle:]
