"""The HTTP layer every provider shares.

One pooled ``requests.Session`` per thread, no retries inside ``requests`` (delivery owns the
retry policy and the event_id makes a resend safe), no redirects followed (a redirect would
carry the API key to another host, and turns a POST into a GET), a timeout on every call, a
User-Agent naming the app, and a ``post()`` that never raises: the outcome of the wire is
always an ``HttpAnswer``. It logs nothing: it does not know which values are secret, so the
provider base logs each request once the API key is masked.

Every request has a total deadline (``CONVERSIONS["REQUEST_DEADLINE"]``): ``requests``' read
timeout bounds each socket read, not the answer, so a provider dripping a byte a second would
hold a worker for ever. Here the connect and read timeouts never exceed the deadline, and a
timer shuts the connection down when it passes (see ``deadline``).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import requests
from django.views.decorators.debug import sensitive_variables

from django_conversions import __version__
from django_conversions.conf import conversions_settings
from django_conversions.deadline import GuardedAdapter, RequestDeadline
from django_conversions.endpoints import DestinationRefused

USER_AGENT = f"django-conversions/{__version__} (+https://pypi.org/project/django-conversions/)"
#: At most this much of an answer is read; a provider's answer is short, anything longer is cut.
MAX_ANSWER_BYTES = 1024 * 1024
TRUNCATED_MARK = "… [truncated]"

_local = threading.local()


class _Session(requests.Session):
    """A session that reads the environment (proxies, CA bundle) once, not on every request,
    and sends without the per-request merging of settings that ``Session.request()`` does.

    With ``trust_env`` requests scans every environment variable twice per request to find
    proxies, and may put a ``.netrc`` login in place of a provider's Authorization header.
    Here the proxy variables (``HTTPS_PROXY``, ``NO_PROXY``, …) are read once per host and
    the CA bundle variables when the session is made; ``.netrc`` is never read.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self._proxies_by_host: dict[str, dict[str, str]] = {}

    @sensitive_variables()  # the headers carry the API key
    def post_prepared(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> requests.Response:
        """``post()`` without merging cookies, hooks and settings the app never sets."""
        request = requests.PreparedRequest()
        request.prepare(method="POST", url=url, headers={**self.headers, **headers}, data=body)
        return self.send(
            request,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
            proxies=self.proxies_for(url),
        )

    def proxies_for(self, url: str) -> dict[str, str]:
        parts = urlsplit(url)
        host = f"{parts.scheme}://{parts.netloc}"
        if host not in self._proxies_by_host:
            self._proxies_by_host[host] = requests.utils.get_environ_proxies(host)
        return self._proxies_by_host[host]


def get_session() -> requests.Session:
    """This thread's pooled session (connections are reused across requests and batches)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _Session()
        adapter = GuardedAdapter(pool_connections=8, pool_maxsize=16, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        _local.session = session
    return session


def close_session() -> None:
    session = getattr(_local, "session", None)
    if session is not None:
        session.close()
        _local.session = None


def default_timeout() -> tuple[float, float]:
    """``(connect, read)`` seconds: ``CONVERSIONS["CONNECT_TIMEOUT"]`` and ``["READ_TIMEOUT"]``."""
    return (float(conversions_settings.CONNECT_TIMEOUT), float(conversions_settings.READ_TIMEOUT))


def default_deadline() -> float:
    """Seconds a whole request may take, connect to last byte: ``["REQUEST_DEADLINE"]``."""
    return float(conversions_settings.REQUEST_DEADLINE)


# --- JSON ----------------------------------------------------------------------------------


def decimal_text(value: Decimal) -> str:
    """A Decimal as a JSON number literal, digit for digit: ``400.34``, ``22.00``, ``1500``.

    Money is rounded to its currency's minor unit before it gets here; writing the Decimal's own
    digits (never a float conversion) keeps it exact at any size and never yields float noise.
    """
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    return format(value, "f")


# A Decimal leaves the encoder as the string "<token><digits>" and is written as the bare number
# <digits> afterwards: the standard encoder keeps its speed and the digits stay exact. A real
# string holding the same characters is never mistaken for one: inside a string the quote is
# escaped, so there it follows a backslash (and the token is random per process anyway).
_DECIMAL_TOKEN = uuid.uuid4().hex
_DECIMAL_OPENING = f'"{_DECIMAL_TOKEN}'


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _DECIMAL_TOKEN + decimal_text(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"a {type(value).__name__} can't be sent as JSON")


# One encoder for every body (json.dumps() builds a new one per call when given options).
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
)


def dumps(payload: Any) -> bytes:
    """Compact UTF-8 JSON; Decimal as an exact JSON number, UUID and datetime as strings.

    Raises ``TypeError`` / ``ValueError`` for what JSON can't carry (objects, NaN, infinity,
    a body that contains itself, text that is not valid Unicode).
    """
    text = _ENCODER.encode(payload)
    if _DECIMAL_OPENING in text:
        text = _bare_decimals(text)
    return text.encode("utf-8")


def _bare_decimals(text: str) -> str:
    """``text`` with each ``"<token><digits>"`` string written as the bare number ``<digits>``."""
    first, *marked = text.split(_DECIMAL_OPENING)
    parts = [first]
    for piece in marked:
        if parts[-1].endswith("\\"):  # an escaped quote inside a string: not a marker
            parts.append(_DECIMAL_OPENING + piece)
            continue
        end = piece.index('"')  # the digits, the closing quote, then the rest of the text
        parts += (piece[:end], piece[end + 1 :])
    return "".join(parts)


def json_object(key: str, encoded_items: Sequence[bytes]) -> bytes:
    """``dumps({key: [...]})`` from items already encoded by ``dumps``, byte for byte."""
    return b"{" + dumps(key) + b":[" + b",".join(encoded_items) + b"]}"


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked when cut (bodies stored on attempts)."""
    if len(text) <= limit:
        return text
    if limit <= len(TRUNCATED_MARK):
        return text[:limit]
    return text[: limit - len(TRUNCATED_MARK)] + TRUNCATED_MARK


# --- the request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpAnswer:
    """What came back for one request: a status and body, or the error that stopped it.

    ``status`` is None when no answer arrived (timeout, connection error); ``error`` may also be
    set next to a status when the body could not be read to the end. ``refused``: nothing was
    sent because the host's address is not allowed (``django_conversions.endpoints``).
    """

    url: str
    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""
    error: str = ""
    duration_ms: int = 0
    refused: bool = False

    def json(self) -> Any:
        """The parsed body, or None when it is not JSON."""
        try:
            return json.loads(self.text)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
            return None

    def header(self, name: str) -> str | None:
        """A response header, whatever its case."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


@sensitive_variables()  # the headers carry the API key; so do requests' and urllib3's frames
def post(
    session: requests.Session,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    timeout: tuple[float, float],
    deadline: float | None = None,
) -> HttpAnswer:
    """POST ``body`` and return what happened; never raises, never follows a redirect.

    ``timeout`` is ``(connect, read)``: how long to wait for the connection and for each read.
    ``deadline`` (default ``REQUEST_DEADLINE``) bounds the whole exchange: an answer not
    complete by then has no status and says so, and the connection is dropped.
    """
    with RequestDeadline(default_deadline() if deadline is None else deadline) as clock:
        # No single wait may outlast the deadline; the timer ends the request when it passes.
        limits = (min(timeout[0], clock.seconds), min(timeout[1], clock.seconds))
        try:
            if isinstance(session, _Session):
                response = session.post_prepared(url, body, headers, limits)
            else:
                response = session.post(
                    url,
                    data=body,
                    headers=dict(headers),
                    timeout=limits,
                    allow_redirects=False,
                    stream=True,
                )
        except (requests.RequestException, ValueError) as err:
            clock.finish()
            refused = _refusal(err)
            if refused is not None:
                return HttpAnswer(
                    url, None, error=str(refused), duration_ms=clock.elapsed_ms(), refused=True
                )
            error = clock.describe() if clock.cut_off or clock.passed() else None
            return HttpAnswer(
                url,
                None,
                error=error or describe_error(err, timeout),
                duration_ms=clock.elapsed_ms(),
            )
        clock.watch_answer(response)
        text, error = _read_body(response, timeout, clock)
    if clock.cut_off:
        return HttpAnswer(
            url, None, dict(response.headers), text, clock.describe(), clock.elapsed_ms()
        )
    return HttpAnswer(
        url,
        response.status_code,
        headers=dict(response.headers),
        text=text,
        error=error,
        duration_ms=clock.elapsed_ms(),
    )


def _read_body(
    response: requests.Response, timeout: tuple[float, float], clock: RequestDeadline
) -> tuple[str, str]:
    """The answer's text (at most ``MAX_ANSWER_BYTES``) and any error met while reading it."""
    raw = bytearray()
    error = ""
    try:
        # Decoding (gzip) happens chunk by chunk, so a small compressed answer that inflates
        # beyond the limit is cut like any other.
        for chunk in response.iter_content(64 * 1024):
            raw += chunk
            if len(raw) > MAX_ANSWER_BYTES:
                del raw[MAX_ANSWER_BYTES:]
                error = f"answer longer than {MAX_ANSWER_BYTES} bytes; the rest was not read"
                break
            if clock.passed():
                clock.cut()
                break
    except (requests.RequestException, ValueError, OSError) as err:
        error = "reading the answer failed: " + describe_error(err, timeout)
    finally:
        clock.finish()
        response.close()
    return raw.decode(response.encoding or "utf-8", errors="replace"), error


def describe_error(err: BaseException, timeout: tuple[float, float]) -> str:
    """A short, secret-free description of why a request got no answer."""
    if isinstance(err, requests.ConnectTimeout):
        return f"could not connect within {timeout[0]:g} s"
    if isinstance(err, requests.Timeout):
        return f"timed out: no answer within {timeout[1]:g} s"
    if isinstance(err, requests.exceptions.InvalidHeader | UnicodeError):
        # These messages quote the header value, which may be the API key.
        return "a request header value can't be sent (it has invalid characters)"
    if isinstance(err, requests.ConnectionError):
        return f"connection error: {_root_cause(err)}"
    return f"request error: {_root_cause(err)}"


def _refusal(err: BaseException) -> DestinationRefused | None:
    """The connection's refusal of a private address, wherever urllib3 and requests wrapped it."""
    pending, seen = [err], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, DestinationRefused):
            return current
        pending += [a for a in current.args if isinstance(a, BaseException)]
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return None


def _root_cause(err: BaseException) -> str:
    """The innermost error's message: 'Connection refused' instead of a wall of urllib3 text."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = err.__cause__ or (
            err.args[0] if err.args and isinstance(err.args[0], BaseException) else None
        )
        if inner is None:
            break
        err = inner
    text = " ".join(str(err).split())
    if "] " in text and text.startswith("<"):  # "<urllib3...>: Failed to ...: [Errno 111] ..."
        text = text.rsplit(": ", 1)[-1]
    return text[:300] or type(err).__name__
