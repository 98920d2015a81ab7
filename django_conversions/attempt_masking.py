"""What of a delivery attempt a person without ``view_personal_data`` may see.

The admin's event page and the API's event detail show, per event, the attempts that carried
it. For a request that carried one event, its texts are masked with that event's customer
values (``masking.mask_known``), as the event's other texts are. A batch request also carries
other customers' events: masking with one event's snapshot would leave the others' values (a
Scanova batch holds every buyer's email and phone hashes) in clear. So a batch body is cut
down to the part carrying this event (found by its event id), masked the same way; when that
part can't be found (the stored body is cut to ``RESPONSE_BODY_LIMIT``, or is not JSON), every
string value in it is masked instead. Texts of a batch (error, provider message) also have
long hexadecimal strings (hashes) masked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from django_conversions.masking import MASK, mask_digest, mask_known

# A SHA-256 (or similar) digest in free text: pseudonymous personal data.
_DIGEST = re.compile(r"\b[0-9a-fA-F]{32,}\b")
# A JSON string literal, also one cut off by truncation at the end of the text.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?$)')
_KEY_FOLLOWS = re.compile(r"\s*:")


def visible_text(text: str, snapshot: Any, *, unmasked: bool, shared: bool) -> str:
    """An attempt's error or an event's provider message, as this reader may see it."""
    if unmasked or not text:
        return text
    masked = mask_known(text, snapshot)
    return _DIGEST.sub(lambda m: mask_digest(m.group()), masked) if shared else masked


def visible_body(
    text: str, snapshot: Any, *, event_id: object, unmasked: bool, shared: bool
) -> str:
    """A request or response body, as this reader may see it (see the module's docstring)."""
    if unmasked or not text:
        return text
    if not shared:
        return mask_known(text, snapshot)
    part = _part_carrying(text, str(event_id))
    if part is not None:
        return visible_text(part, snapshot, unmasked=False, shared=True)
    return mask_known(mask_string_values(text), snapshot)


def mask_string_values(text: str) -> str:
    """Every JSON string value in ``text`` masked (keys kept), even in a cut-off body."""

    def mask(match: re.Match[str]) -> str:
        literal = match.group()
        if _KEY_FOLLOWS.match(text, match.end()):
            return literal
        inner = literal[1:-1] if literal.endswith('"') and len(literal) > 1 else literal[1:]
        return f'"{inner[:1]}{MASK}"' if inner else literal

    return _STRING.sub(mask, text)


def _part_carrying(text: str, event_id: str) -> str | None:
    """The smallest JSON object in a list that holds ``event_id`` as a value, as JSON."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    parts: list[str] = []
    # Iterative: a stored body nested deep must not exhaust the stack.
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            parts.extend(
                json.dumps(item, ensure_ascii=False)
                for item in node
                if isinstance(item, Mapping) and _holds(item, event_id)
            )
            stack.extend(node)
        elif isinstance(node, Mapping):
            stack.extend(node.values())
    return min(parts, key=len, default=None)


def _holds(node: Any, value: str) -> bool:
    stack = [node]
    while stack:
        item = stack.pop()
        if item == value:
            return True
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
