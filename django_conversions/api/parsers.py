"""A JSON parser with a size cap, for the endpoints that store what they are sent."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

# Largest body a valid conversion can need: 1,000 items with the longest ids and names plus
# 10 KB of properties stay well under 1 MiB.
MAX_BODY_BYTES = 1024 * 1024


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"Request body larger than {MAX_BODY_BYTES} bytes."
    default_code = "payload_too_large"


class BoundedJSONParser(JSONParser):
    """Reads at most ``MAX_BODY_BYTES``; deeply nested JSON is a 400, not a server error."""

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", "utf-8")
        raw = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        try:
            return json.loads(raw.decode(encoding), parse_constant=_reject_constant)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python would accept them.
    raise ValueError(f"{name} is not valid JSON")
