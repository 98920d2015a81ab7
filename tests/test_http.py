"""The shared HTTP layer: JSON encoding, the pooled session, and a post() that never raises.

Claims about the wire (no retries, no redirects, timeouts, cut-off answers) run against a real
local HTTP server; the rest uses ``responses``.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import responses
from django.conf import settings
from django.test import override_settings

from django_conversions import __version__, http

# --- JSON ----------------------------------------------------------------------------------


def test_dumps_writes_compact_utf8_with_exact_decimals() -> None:
    # given
    payload = {
        "amount": Decimal("400.34"),
        "shipping": Decimal("22.00"),
        "yen": Decimal("1500"),
        "big": Decimal("1E+9").quantize(Decimal("0.01")),
        "id": uuid.UUID(int=1),
        "at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        "day": date(2024, 5, 1),
        "name": 'Brașov 東京 "quoted"',
        "list": (1, 2.5, None, True, False),
    }
    # when
    wire = http.dumps(payload)
    # then
    assert (
        wire
        == (
            '{"amount":400.34,"shipping":22.00,"yen":1500,"big":1000000000.00,'
            '"id":"00000000-0000-0000-0000-000000000001","at":"2024-05-01T12:00:00+00:00",'
            '"day":"2024-05-01","name":"Brașov 東京 \\"quoted\\"","list":[1,2.5,null,true,false]}'
        ).encode()
    )
    assert json.loads(wire)["amount"] == 400.34


def test_dumps_writes_every_decimal_of_a_body_as_a_bare_number() -> None:
    payload = {"a": [Decimal("-0.50"), Decimal("7")], "b": '"quoted" 1.00', "c": Decimal("3.25")}

    assert http.dumps(payload) == b'{"a":[-0.50,7],"b":"\\"quoted\\" 1.00","c":3.25}'


def test_a_body_that_contains_itself_is_refused() -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped

    with pytest.raises((RecursionError, ValueError)):
        http.dumps(looped)


# Bodies as the encoder wrote them before it moved to the standard library's public API: the
# bytes a provider receives did not change.
@pytest.mark.parametrize(
    ("payload", "wire"),
    [
        (
            {
                "event_id": uuid.UUID(int=7),
                "value": Decimal("1234567890123456789.99"),
                "items": [
                    {"id": "sku-1", "quantity": 2, "price": Decimal("0.10")},
                    {"id": "é\u2028\x00", "price": Decimal("-0")},
                ],
                "nested": {"deep": [[Decimal("1E+2")]]},
                "ok": None,
            },
            b'{"event_id":"00000000-0000-0000-0000-000000000007","value":1234567890123456789.99,'
            b'"items":[{"id":"sku-1","quantity":2,"price":0.10},'
            b'{"id":"\xc3\xa9\xe2\x80\xa8\\u0000","price":-0}],"nested":{"deep":[[100]]},'
            b'"ok":null}',
        ),
        (
            [Decimal("0.000001"), 'x"y\\z', "😀", 1.5, -2, True],
            b'[0.000001,"x\\"y\\\\z","\xf0\x9f\x98\x80",1.5,-2,true]',
        ),
        (
            {
                "s": "a\nb\tc\u001f",
                "at": datetime(2026, 12, 2, 23, 0, 0, 123456, tzinfo=UTC),
                "d": date(2026, 1, 2),
                "t": (Decimal("3"),),
            },
            b'{"s":"a\\nb\\tc\\u001f","at":"2026-12-02T23:00:00.123456+00:00",'
            b'"d":"2026-01-02","t":[3]}',
        ),
        (Decimal("12.50"), b"12.50"),
        ("plain", b'"plain"'),
    ],
)
def test_bodies_are_byte_for_byte_what_they_were(payload: Any, wire: bytes) -> None:
    assert http.dumps(payload) == wire


def test_a_string_that_looks_like_a_number_stays_a_string() -> None:
    assert http.dumps({"a": "1.10", "b": Decimal("1.10")}) == b'{"a":"1.10","b":1.10}'


def test_a_string_holding_the_decimal_marker_stays_that_string() -> None:
    # given: text that spells out the encoder's own marker for a decimal, quotes and all
    sly = f'"{http._DECIMAL_TOKEN}1.5" and \\"{http._DECIMAL_TOKEN}2'
    payload = {"note": sly, "value": Decimal("3.10"), "list": [sly, Decimal("-1")]}
    # when
    wire = http.dumps(payload)
    # then
    assert json.loads(wire) == {"note": sly, "value": 3.1, "list": [sly, -1]}
    assert b'"value":3.10' in wire


@pytest.mark.parametrize(
    "bad",
    [float("nan"), float("inf"), Decimal("NaN"), Decimal("-Infinity"), object(), {1, 2}, "\ud83d"],
)
def test_dumps_refuses_what_json_cannot_carry(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        http.dumps({"x": bad})


def test_truncate_marks_what_it_cuts() -> None:
    assert http.truncate("short", 10) == "short"
    cut = http.truncate("x" * 100, 40)
    assert len(cut) == 40 and cut.endswith(http.TRUNCATED_MARK)


# --- the session -------------------------------------------------------------------------------


def test_one_pooled_session_per_thread_without_retries() -> None:
    # given
    http.close_session()
    session = http.get_session()
    other: list[requests.Session] = []
    # when
    thread = threading.Thread(target=lambda: other.append(http.get_session()))
    thread.start()
    thread.join()
    # then
    assert http.get_session() is session
    assert other[0] is not session
    assert session.headers["User-Agent"] == http.USER_AGENT
    assert http.USER_AGENT.startswith(f"django-conversions/{__version__}")
    adapter = session.get_adapter("https://track.scanova.io")
    assert adapter.max_retries.total == 0  # type: ignore[attr-defined]


def test_default_timeout_and_deadline_come_from_settings() -> None:
    conversions = {
        **settings.CONVERSIONS,
        "CONNECT_TIMEOUT": 2,
        "READ_TIMEOUT": 7.5,
        "REQUEST_DEADLINE": 12,
    }
    with override_settings(CONVERSIONS=conversions):
        assert http.default_timeout() == (2.0, 7.5)
        assert http.default_deadline() == 12.0


# --- post() with responses -----------------------------------------------------------------------


def post(url: str, **kwargs: Any) -> http.HttpAnswer:
    values: dict[str, Any] = {"body": b"{}", "headers": {}, "timeout": (1.0, 2.0)}
    return http.post(requests.Session(), url, **{**values, **kwargs})


def test_post_returns_status_headers_and_text(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post("https://p.test/e", status=201, json={"ok": True}, headers={"X-Id": "7"})
    answer = post("https://p.test/e")
    assert (answer.status, answer.json(), answer.header("x-id")) == (201, {"ok": True}, "7")
    assert answer.error == "" and answer.duration_ms >= 0


def test_a_body_that_is_not_json_reads_as_none(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post("https://p.test/e", status=502, body="<html>bad gateway</html>")
    answer = post("https://p.test/e")
    assert answer.json() is None and answer.text == "<html>bad gateway</html>"


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (requests.ConnectTimeout("x"), "could not connect within 1 s"),
        (requests.ReadTimeout("x"), "timed out: no answer within 2 s"),
        (requests.ConnectionError("Connection refused"), "connection error: Connection refused"),
        (requests.exceptions.InvalidHeader("bad 'secret'"), "can't be sent"),
        (requests.exceptions.TooManyRedirects("loop"), "request error: loop"),
    ],
)
def test_post_never_raises(
    mocked_http: responses.RequestsMock, error: Exception, text: str
) -> None:
    mocked_http.post("https://p.test/e", body=error)
    answer = post("https://p.test/e")
    assert answer.status is None and text in answer.error
    assert "secret" not in answer.error


def test_a_header_value_that_cannot_be_encoded_does_not_raise_or_leak() -> None:
    # given: a pasted key with a typographic quote (not Latin-1)
    answer = post("http://127.0.0.1:9/e", headers={"X-API-Key": "key-with-\u201cquote\u201d"})
    assert answer.status is None
    assert "key-with" not in answer.error and "quote" not in answer.error


# --- post() on the wire ---------------------------------------------------------------------------


@contextmanager
def server(handle: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[tuple[str, list[Any]]]:
    """A local HTTP server calling ``handle`` for each POST; yields its URL and the requests."""
    seen: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen.append((self.path, dict(self.headers.items()), self.rfile.read(length)))
            handle(self)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def reply(status: int, body: bytes = b"{}", **headers: str) -> Callable[[Any], None]:
    def handle(request: BaseHTTPRequestHandler) -> None:
        request.send_response(status)
        request.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            request.send_header(name.replace("_", "-"), value)
        request.end_headers()
        request.wfile.write(body)

    return handle


def test_the_body_and_headers_arrive_as_sent() -> None:
    with server(reply(200)) as (url, seen):
        answer = http.post(
            http.get_session(),
            url + "/server-events",
            body=http.dumps({"amount": Decimal("1.10"), "city": "Brașov"}),
            headers={"Content-Type": "application/json", "X-API-Key": "k-123"},
            timeout=(2.0, 5.0),
        )
    assert answer.status == 200
    [(path, headers, body)] = seen
    assert path == "/server-events"
    assert body == '{"amount":1.10,"city":"Brașov"}'.encode()
    assert headers["X-API-Key"] == "k-123" and headers["User-Agent"] == http.USER_AGENT


def test_a_redirect_is_not_followed() -> None:
    with (
        server(reply(200)) as (elsewhere, seen_elsewhere),
        server(reply(307, Location=elsewhere + "/steal")) as (url, seen),
    ):
        answer = post(url + "/e", headers={"X-API-Key": "k-123"})
    assert answer.status == 307 and answer.header("Location") == elsewhere + "/steal"
    assert len(seen) == 1 and seen_elsewhere == []


def test_a_dropped_connection_is_tried_once_and_reported() -> None:
    # given: a server that reads the request and hangs up without answering
    def hang_up(request: BaseHTTPRequestHandler) -> None:
        request.connection.shutdown(socket.SHUT_RDWR)

    with server(hang_up) as (url, seen):
        answer = post(url + "/e")
    assert answer.status is None and answer.error.startswith("connection error")
    assert len(seen) == 1  # no retry inside requests: delivery decides


def test_a_slow_answer_times_out() -> None:
    def slow(request: BaseHTTPRequestHandler) -> None:
        time.sleep(1.0)
        reply(200)(request)

    with server(slow) as (url, _):
        answer = post(url + "/e", timeout=(1.0, 0.2))
    assert answer.status is None and answer.error == "timed out: no answer within 0.2 s"


def test_a_closed_port_is_a_connection_error() -> None:
    # given: a port this test holds, bound but not listening, so nothing else can take it
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        # when
        answer = post(f"http://127.0.0.1:{port}/e")
    # then
    assert answer.status is None and answer.error.startswith("connection error")


def test_a_huge_answer_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    # given
    monkeypatch.setattr(http, "MAX_ANSWER_BYTES", 1000)
    with server(reply(500, b"x" * 5000, Content_Type="text/plain")) as (url, _):
        answer = post(url + "/e")
    assert answer.status == 500
    assert answer.text == "x" * 1000 and "not read" in answer.error


def test_a_compressed_answer_that_inflates_past_the_limit_is_cut() -> None:
    # given: 50 KB on the wire that inflate to 64 MB
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    with server(reply(200, bomb, Content_Encoding="gzip")) as (url, _):
        answer = post(url + "/e")
    assert answer.status == 200
    assert len(answer.text) == http.MAX_ANSWER_BYTES and "not read" in answer.error


# --- the deadline: connect plus the whole answer --------------------------------------------

DRIP_BYTES = 30  # one a second: half a minute for the whole answer


class Drip:
    """What a dripping server managed to send before the client hung up."""

    def __init__(self) -> None:
        self.sent = 0
        self.hung_up = threading.Event()


@contextmanager
def dripping_server(
    *, headers: bool = False, content_length: bool = True
) -> Iterator[tuple[str, Drip]]:
    """A server dripping its answer one byte per second: the body after headers sent at once,
    or (``headers=True``) the headers themselves after the status line."""
    drip = Drip()
    stop = threading.Event()

    def send(request: BaseHTTPRequestHandler) -> None:
        if headers:
            request.wfile.write(b"HTTP/1.1 200 OK\r\n")
            slow = b"X-Slow: " + b"x" * DRIP_BYTES + b"\r\nContent-Length: 0\r\n\r\n"
        else:
            request.send_response(200)
            if content_length:
                request.send_header("Content-Length", str(DRIP_BYTES))
            else:
                request.send_header("Connection", "close")  # the body ends at hang-up
            request.end_headers()
            slow = b"x" * DRIP_BYTES
        for byte in slow:
            if stop.wait(1.0):
                return
            try:
                request.wfile.write(bytes([byte]))
            except OSError:
                drip.hung_up.set()
                return
            drip.sent += 1

    with server(send) as (url, _):
        try:
            yield url, drip
        finally:
            stop.set()


def assert_cut_off_early(answer: http.HttpAnswer, drip: Drip) -> None:
    """The client gave up at its 1.5 s deadline: the server, dripping a byte a second, found
    the connection closed after a few bytes of the dozens it had."""
    assert answer.status is None
    assert answer.error == "no complete answer within 1.5 s (deadline)"
    assert drip.hung_up.wait(10)
    assert drip.sent <= 5


@pytest.mark.parametrize("content_length", [True, False])
def test_an_answer_dripping_slower_than_the_deadline_is_cut_off(content_length: bool) -> None:
    # given: a provider whose every byte comes well inside the read timeout
    with dripping_server(content_length=content_length) as (url, drip):
        # when
        answer = post(url + "/e", timeout=(1.0, 10.0), deadline=1.5)
        # then
        assert_cut_off_early(answer, drip)
    assert answer.duration_ms >= 1500


@pytest.mark.parametrize("headers", [True, False], ids=["headers", "body"])
def test_the_apps_session_cuts_off_a_drip_in_the_headers_or_the_body(
    fresh_session: None, headers: bool
) -> None:
    with dripping_server(headers=headers) as (url, drip):
        answer = http.post(
            http.get_session(), url + "/e", body=b"{}", headers={}, timeout=(1, 10), deadline=1.5
        )
        assert_cut_off_early(answer, drip)


@contextmanager
def silent_server() -> Iterator[str]:
    """A server that takes the request and never answers (until the test ends)."""
    release = threading.Event()
    with server(lambda request: release.wait(30)) as (url, _):
        try:
            yield url
        finally:
            release.set()


def test_a_server_that_never_answers_is_left_at_the_deadline_from_settings() -> None:
    conversions = {**settings.CONVERSIONS, "REQUEST_DEADLINE": 1.5}
    with silent_server() as url, override_settings(CONVERSIONS=conversions):
        answer = post(url + "/e", timeout=(1.0, 10.0))
    assert answer.status is None
    assert answer.error == "no complete answer within 1.5 s (deadline)"


def test_a_server_that_never_answers_is_left_at_the_read_timeout_when_it_is_shorter() -> None:
    with silent_server() as url:
        answer = post(url + "/e", timeout=(1.0, 0.3), deadline=30)
    assert answer.status is None and answer.error == "timed out: no answer within 0.3 s"


def test_an_answer_complete_within_the_deadline_is_kept() -> None:
    with server(reply(201, b'{"ok":true}')) as (url, _):
        answer = post(url + "/e", deadline=5)
    assert (answer.status, answer.json(), answer.error) == (201, {"ok": True}, "")


# --- the environment: proxies and .netrc ---------------------------------------------------


@pytest.fixture
def fresh_session() -> Iterator[None]:
    """Each test reads the environment into a session of its own."""
    http.close_session()
    yield
    http.close_session()


def app_post(url: str, headers: dict[str, str] | None = None) -> http.HttpAnswer:
    """post() through the session delivery uses."""
    return http.post(http.get_session(), url, body=b"{}", headers=headers or {}, timeout=(1, 2))


def test_a_proxy_set_in_the_environment_carries_the_request(
    fresh_session: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: the local server stands in for the proxy; the provider's host doesn't resolve
    with server(reply(200)) as (proxy, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        # when
        answer = app_post("http://provider.invalid/server-events", {"X-API-Key": "k-1"})
    # then: the request went to the proxy, naming the provider's URL
    assert answer.status == 200
    [(path, headers, _)] = seen
    assert path == "http://provider.invalid/server-events"
    assert headers["X-API-Key"] == "k-1"


def test_no_proxy_sends_that_host_direct(
    fresh_session: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with server(reply(200)) as (proxy, proxied), server(reply(200)) as (direct, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        answer = app_post(direct + "/server-events")
    assert answer.status == 200
    assert proxied == [] and [path for path, _, _ in seen] == ["/server-events"]


def test_a_netrc_login_never_replaces_the_providers_authorization(
    fresh_session: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # given: a .netrc with a login for the provider's host (requests would send it instead)
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    with server(reply(200)) as (url, seen):
        app_post(url + "/v1/event/", {"Authorization": "vt-key-1"})
    [(_, headers, _)] = seen
    assert headers["Authorization"] == "vt-key-1"


def test_a_batch_body_from_encoded_events_is_what_dumps_writes() -> None:
    events = [{"amount": Decimal("1.10"), "city": "Brașov"}, {"id": uuid.UUID(int=2)}]
    joined = http.json_object("events", [http.dumps(e) for e in events])
    assert joined == http.dumps({"events": events})
