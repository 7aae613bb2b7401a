"""Parsers on hand-made and hostile input: garbage is kept (logs) or refused precisely (envelopes, events)."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regwarden.audit.parse import (
    MAX_LINE_BYTES,
    RAW_KEEP_BYTES,
    UNPARSED,
    classify_route,
    map_docker_event,
    parse_image_reference,
    parse_notification_envelope,
    parse_registry_line,
)
from regwarden.events import Event

OBSERVED = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def parse(line: bytes) -> Event:
    return parse_registry_line(line, registry="internal", host="h1", observed=OBSERVED)


# --------------------------------------------------------------------------- registry lines: garbage


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"level":"info","msg":"trunc', "invalid JSON"),
    (b"[1, 2, 3]", "not a JSON, logfmt or access log line"),
    (b'{"x": 1', "invalid JSON"),
    (b"\xff\xfe\x00binary\x00", "invalid UTF-8 at byte 0"),
    (b"", "empty line"),
    (b"   \n", "empty line"),
    (b"hello world", "not a JSON, logfmt or access log line"),
    (b'time="2026-11-27T07:09:48Z" level=info msg="unterminated', "invalid logfmt record"),
    (b'time="2026-11-27T07:09:48Z" level=info', "invalid logfmt record"),
    (b"[1]", "not a JSON, logfmt or access log line"),
    (b'127.0.0.1 - - [99/Nov/2026:07:09:50 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "x"',
     "not a JSON, logfmt or access log line"),
])
def test_garbage_line_becomes_unparsed_record_with_reason(line: bytes, reason: str) -> None:
    """A line that is no known record is kept as registry.unparsed with the reason, never dropped."""
    event = parse(line)
    assert event.kind == UNPARSED
    assert event.detail["reason"].startswith(reason)
    assert event.time == OBSERVED and event.target.registry == "internal"


def test_json_with_trailing_garbage_is_unparsed() -> None:
    """A JSON object followed by other text is not a record."""
    event = parse(b'{"msg": "x"} trailing')
    assert event.kind == UNPARSED and event.detail["reason"].startswith("invalid JSON")


def test_unparsed_keeps_the_line_verbatim() -> None:
    """The verbatim text of an unparsed UTF-8 line is in detail.raw."""
    event = parse(b'{"level":"info","msg":"trunc')
    assert event.detail["raw"] == '{"level":"info","msg":"trunc'
    assert event.detail["length"] == 28 and event.detail["truncated"] is False


def test_invalid_utf8_is_kept_as_base64() -> None:
    """A line that is not UTF-8 is kept byte-exact as base64."""
    line = b"GET /v2/ \xc3\x28 oops"
    event = parse(line)
    assert "raw" not in event.detail
    assert base64.b64decode(event.detail["raw_b64"]) == line


def test_long_line_is_bounded() -> None:
    """A 1 MiB line is refused as too long and only its first 4 KiB are kept."""
    line = b"x" * (1024 * 1024)
    event = parse(line)
    assert event.kind == UNPARSED
    assert event.detail["reason"] == f"line too long ({len(line)} bytes > {MAX_LINE_BYTES})"
    assert event.detail["raw"] == "x" * RAW_KEEP_BYTES
    assert event.detail["truncated"] is True and event.detail["length"] == len(line)


def test_long_line_cut_inside_a_character_keeps_text() -> None:
    """Cutting a long UTF-8 line in the middle of a character still keeps it as text."""
    line = "é".encode() * (MAX_LINE_BYTES // 2 + 1)
    event = parse(line)
    assert event.detail["raw"] == "é" * (RAW_KEEP_BYTES // 2)


def test_trailing_newline_and_crlf_are_ignored() -> None:
    """Line terminators do not change the record."""
    line = b'127.0.0.1 - - [27/Nov/2026:07:09:50 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/8"'
    assert parse(line).record() == parse(line + b"\r\n").record()


# --------------------------------------------------------------------------- registry lines: records


def test_access_line_unescapes_go_quoting() -> None:
    """Escaped quotes and backslashes in an access line's user agent are undone."""
    line = rb'10.0.0.9 - - [27/Nov/2026:07:09:50 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "a \"b\" c\\d \x41"'
    assert parse(line).actor.agent == 'a "b" c\\d A'


def test_access_line_user_and_missing_size() -> None:
    """The access line's user field is the actor, and `-` size is 0 bytes."""
    line = b'10.0.0.9 - bob [27/Nov/2026:07:09:50 +0200] "DELETE /v2/a/b/manifests/v1 HTTP/1.1" 202 - "" "x"'
    event = parse(line)
    assert (event.kind, event.actor.user, event.detail["bytes"], event.outcome) == (
        "image.delete", "bob", 0, "success")
    assert event.record()["time"] == "2026-11-27T05:09:50.000000Z"


def test_access_line_without_referer_and_agent() -> None:
    """The common log format (no referer and agent) is accepted."""
    event = parse(b'10.0.0.9 - - [27/Nov/2026:07:09:50 +0000] "GET /v2/_catalog HTTP/1.1" 200 10')
    assert event.kind == "catalog.list" and event.actor.agent is None


def test_access_line_with_level_in_uri_is_an_access_line() -> None:
    """An access line whose URI contains ` level=` is still an access line."""
    event = parse(b'10.0.0.9 - - [27/Nov/2026:07:09:50 +0000] "GET /v2/?x= level=1 HTTP/1.1" 404 0 "" "x"')
    assert event.kind == "registry.ping" and event.status == 404


def test_json_record_without_time_uses_observed() -> None:
    """A record without a parseable time is dated when observed and keeps the raw time."""
    event = parse(b'{"level":"info","msg":"x","time":"yesterday"}')
    assert event.time == OBSERVED and event.detail["time_raw"] == "yesterday"


@pytest.mark.parametrize("line", [
    b'{"level":"info","msg":"x","time":"2026-11-27T07:09:48Z","ratio":NaN}',
    b'{"level":"info","msg":"x","time":"2026-11-27T07:09:48Z","size":123456789012345678901234567890}',
    b'{"level":"info","msg":"x \\ud800","time":"2026-11-27T07:09:48Z"}',
])
def test_json_only_the_json_module_reads_is_still_a_record(line: bytes) -> None:
    """Lines orjson refuses but Go may write and json reads (NaN, huge integers, a lone surrogate
    escape) are records, not unparsed."""
    event = parse(line)
    assert event.kind == "registry.log" and event.detail["level"] == "info"
    assert event.time == datetime(2026, 11, 27, 7, 9, 48, tzinfo=UTC)


def test_secret_named_registry_fields_are_redacted() -> None:
    """A field of the registry's record that names a secret is replaced before the record exists."""
    event = parse(b'{"level":"info","msg":"x","time":"2026-11-27T07:09:48Z","http.request.header.authorization":'
                  b'"Basic YWxpY2U6c2VjcmV0","instance.id":"i1"}')
    assert event.detail["fields"] == {"http.request.header.authorization": "[REDACTED]", "instance.id": "i1"}


@pytest.mark.parametrize(("stamp", "expected"), [
    ("2026-11-27T07:09:48.450527131Z", "2026-11-27T07:09:48.450527Z"),
    ("2026-11-27T07:09:48.4505271Z", "2026-11-27T07:09:48.450527Z"),
    ("2026-11-27T07:09:48.45Z", "2026-11-27T07:09:48.450000Z"),
    ("2026-11-27T07:09:48Z", "2026-11-27T07:09:48.000000Z"),
    ("2026-11-27T08:09:48.450527131+01:00", "2026-11-27T07:09:48.450527Z"),
])
def test_record_time_is_utc_with_microseconds(stamp: str, expected: str) -> None:
    """Go's RFC 3339 times, nanoseconds or fewer digits, any offset, become UTC with microseconds."""
    event = parse(json.dumps({"level": "info", "msg": "x", "time": stamp}).encode())
    assert event.record()["time"] == expected
    assert event.time == datetime.fromisoformat(expected)


def test_logfmt_escapes_are_undone() -> None:
    """Go-quoted logfmt values are unquoted (\\", \\\\, \\n, \\u, \\x)."""
    line = rb'time="2026-11-27T07:09:48Z" level=error msg="a \"q\" b\\c\nd \u00e9 \xff" k=v'
    event = parse(line)
    assert event.detail["msg"] == 'a "q" b\\c\nd \u00e9 \ufffd'
    assert event.detail["fields"] == {"k": "v"}


def test_auth_failure_with_quoted_user() -> None:
    """A user name with an escaped quote is read from the auth failure message."""
    line = json.dumps({"level": "error", "msg": 'error authenticating user "ma\\"l": authentication failure',
                       "http.request.remoteaddr": "10.1.1.1:5", "time": "2026-11-27T07:09:50Z"}).encode()
    event = parse(line)
    assert (event.kind, event.actor.user, event.actor.addr) == ("auth.failure", 'ma"l', "10.1.1.1:5")


@pytest.mark.parametrize(("method", "uri", "expected"), [
    ("GET", "/v2/", ("registry.ping", None, None, None)),
    ("GET", "/v2/_catalog?n=10", ("catalog.list", None, None, None)),
    ("GET", "/v2/a/b/c/tags/list", ("tags.list", "a/b/c", None, None)),
    ("HEAD", "/v2/app/manifests/latest", ("image.pull", "app", "latest", None)),
    ("GET", "/v2/app/manifests/sha256:" + "a" * 64, ("image.pull", "app", None, "sha256:" + "a" * 64)),
    ("PUT", "/v2/team/app/manifests/1.0", ("image.push", "team/app", "1.0", None)),
    ("DELETE", "/v2/app/manifests/sha256:" + "b" * 64, ("image.delete", "app", None, "sha256:" + "b" * 64)),
    ("GET", "/v2/app/blobs/sha256:" + "c" * 64, ("blob.pull", "app", None, "sha256:" + "c" * 64)),
    ("DELETE", "/v2/app/blobs/sha256:" + "c" * 64, ("blob.delete", "app", None, "sha256:" + "c" * 64)),
    ("POST", "/v2/app/blobs/uploads/", ("blob.upload", "app", None, None)),
    ("POST", "/v2/app/blobs/uploads/?mount=sha256:x&from=other", ("blob.mount", "app", None, "sha256:x")),
    ("PATCH", "/v2/app/blobs/uploads/0f1e", ("blob.upload", "app", None, None)),
    ("PUT", "/v2/app/blobs/uploads/0f1e?_state=s&digest=sha256:d", ("blob.push", "app", None, "sha256:d")),
    ("GET", "/metrics", ("registry.request", None, None, None)),
    ("POST", "/v2/app/manifests/x", ("registry.request", "app", "x", None)),
])
def test_classify_route(method: str, uri: str, expected: tuple[Any, ...]) -> None:
    """Registry API routes map to the documented kinds, repository, tag and digest."""
    assert classify_route(method, uri) == expected


@given(st.binary(max_size=2048))
@settings(max_examples=400, deadline=None)
def test_parse_registry_line_never_raises_and_is_well_formed(line: bytes) -> None:
    """Any bytes give one well-formed, JSON-serialisable record of the registry-log source."""
    event = parse(line)
    record = event.record()
    json.dumps(record)  # serialisable
    assert event.source == "registry-log" and event.host == "h1"
    assert event.outcome in ("success", "failure", "unknown")
    if event.kind == UNPARSED:
        if "raw" in event.detail:
            assert line.startswith(event.detail["raw"].encode())
        else:
            assert line.startswith(base64.b64decode(event.detail["raw_b64"]))


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


@given(st.dictionaries(st.sampled_from(["level", "msg", "time", "http.request.id", "http.request.uri",
                                        "http.request.method", "auth.user.name", "vars.name", "x.y"]),
                       _text, min_size=1))
@settings(max_examples=300, deadline=None)
def test_json_and_logfmt_of_the_same_fields_agree(fields: dict[str, str]) -> None:
    """The same fields written by logrus' JSON and text formatters parse to the same record."""
    fields = {"time": "2026-11-27T07:09:48.1Z", "level": "info", "msg": "m", **fields}
    as_json = json.dumps(fields).encode()
    as_logfmt = " ".join(f"{k}={_go_quote(v)}" for k, v in fields.items()).encode()
    a, b = parse(as_json), parse(as_logfmt)
    assert a.kind == b.kind
    assert (a.actor, a.target, a.request_id, a.detail["msg"]) == (b.actor, b.target, b.request_id, b.detail["msg"])


_field_value = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), _text,
                         st.lists(_text, max_size=3), st.dictionaries(_text, _text, max_size=3))


@given(st.dictionaries(st.sampled_from(["level", "msg", "time", "http.request.id", "http.request.uri",
                                        "http.request.method", "http.response.status", "auth.user.name",
                                        "http.request.remoteaddr", "http.request.useragent", "vars.name",
                                        "vars.reference", "vars.digest", "go.version", "x.token", "x.y"]),
                       _field_value), st.sampled_from(["json", "access"]))
@settings(max_examples=400, deadline=None)
def test_the_fast_path_record_is_the_constructors_record(fields: dict[str, Any], form: str) -> None:
    """Whatever the registry writes, the record the parser builds directly is the one the general
    Event constructor builds from the same values (same keys, same normalisation, secrets scrubbed)."""
    if form == "json":
        line = json.dumps(fields).encode()
    else:
        line = (f'{fields.get("http.request.remoteaddr") or "10.0.0.1"} - - [27/Nov/2026:07:09:50 +0000] '
                f'"GET /v2/{fields.get("vars.name") or "r"}/manifests/t HTTP/1.1" 200 2 "" "ua"').encode()
    event = parse(line)
    assert event.replace().record() == event.record()
    secret = fields.get("x.token")
    if form == "json" and isinstance(secret, str) and secret:
        assert event.detail["fields"]["x.token"] == "[REDACTED]"


def _go_quote(value: str) -> str:
    """Always-quoted form of logrus' text formatter."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


@given(st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH"]),
       st.from_regex(r"[a-z0-9]+(/[a-z0-9]+){0,2}", fullmatch=True),
       st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True),
       st.integers(min_value=100, max_value=599))
@settings(max_examples=200, deadline=None)
def test_access_line_round_trip(method: str, repo: str, tag: str, status: int) -> None:
    """A formatted access line parses back to its method, repository, tag and status."""
    line = (f'10.0.0.1 - - [27/Nov/2026:07:09:50 +0000] "{method} /v2/{repo}/manifests/{tag} HTTP/1.1" '
            f'{status} 12 "" "ua"').encode()
    event = parse(line)
    assert (event.target.repository, event.target.tag, event.status, event.detail["method"]) == (
        repo, tag, status, method)
    assert event.outcome == ("success" if status < 400 else "failure")


# --------------------------------------------------------------------------- notifications

def _event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "e1", "timestamp": "2026-11-27T07:09:50.5Z", "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": "team/app",
                   "tag": "latest", "digest": "sha256:" + "1" * 64,
                   "url": "http://r/v2/team/app/manifests/sha256:" + "1" * 64},
        "request": {"id": "r1", "addr": "10.0.0.2:4000", "host": "reg:5000", "method": "PUT", "useragent": "ua"},
        "actor": {"name": "ci"}, "source": {"addr": "vm:5000", "instanceID": "i1"},
    }
    event.update(overrides)
    return event


def envelope(*events: Any) -> bytes:
    return json.dumps({"events": list(events)}).encode()


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "body is not JSON"),
    (b"\xff\xfe", "body is not JSON"),
    (b"[]", "body must be a JSON object, got list"),
    (b"{}", "body.events: expected a list of events"),
    (b'{"events": {}}', "body.events: expected a list of events"),
    (envelope(1), "events[0]: expected an object, got int"),
    (envelope(_event(), _event(id="")), "events[1].id: expected a non-empty string"),
    (envelope(_event(action=None)), "events[0].action: expected a non-empty string"),
    (envelope(_event(timestamp="soon")), "events[0].timestamp: not an RFC 3339 time: 'soon'"),
    (envelope(_event(target=None)), "events[0].target: expected an object"),
    (envelope(_event(target={"tag": "x"})), "events[0].target.repository: expected a non-empty string"),
    (envelope(_event(request=[])), "events[0].request: expected an object"),
    (envelope(_event(actor={"name": 5})), "events[0].actor.name: expected a string, got int"),
])
def test_malformed_envelope_raises_value_error_naming_the_problem(body: bytes, message: str) -> None:
    """A malformed envelope is refused with a message that names where and what."""
    with pytest.raises(ValueError) as info:
        parse_notification_envelope(body, host="h", observed=OBSERVED)
    assert str(info.value).startswith(message)


def test_empty_envelope_has_no_events() -> None:
    """An envelope without events is valid and yields nothing."""
    assert parse_notification_envelope(b'{"events": []}', host="h", observed=OBSERVED) == []


@pytest.mark.parametrize(("overrides", "kind"), [
    ({}, "image.push"),
    ({"action": "pull"}, "image.pull"),
    ({"action": "delete", "target": {"repository": "a", "digest": "sha256:" + "2" * 64}}, "image.delete"),
    ({"action": "mount", "target": {"repository": "a", "digest": "sha256:3", "mediaType":
                                    "application/octet-stream", "url": "http://r/v2/a/blobs/sha256:3"}},
     "blob.mount"),
    ({"action": "push", "target": {"repository": "a", "digest": "sha256:3", "mediaType":
                                   "application/vnd.oci.image.layer.v1.tar+gzip"}}, "blob.push"),
    ({"action": "frobnicate"}, "registry.notification"),
])
def test_notification_action_kinds(overrides: dict[str, Any], kind: str) -> None:
    """Notification actions on manifests and blobs map to the documented kinds."""
    [event] = parse_notification_envelope(envelope(_event(**overrides)), host="h", observed=OBSERVED)
    assert event.kind == kind


def test_notification_fields() -> None:
    """A notification keeps id, actor, request and target fields."""
    [event] = parse_notification_envelope(envelope(_event()), host="h1", observed=OBSERVED)
    assert (event.id, event.actor.user, event.actor.addr, event.actor.agent, event.request_id) == (
        "e1", "ci", "10.0.0.2:4000", "ua", "r1")
    assert (event.target.registry, event.target.repository, event.target.tag) == ("reg:5000", "team/app", "latest")
    assert event.detail == {"action": "push", "media_type": "application/vnd.oci.image.manifest.v1+json",
                            "method": "PUT", "instance_id": "i1"}


# --------------------------------------------------------------------------- docker events

_DOCKER = {"Type": "image", "Action": "pull", "Actor": {"ID": "busybox:1.36", "Attributes": {"name": "busybox"}},
           "scope": "local", "time": 1795763396, "timeNano": 1795763396831339130}


@pytest.mark.parametrize(("change", "message"), [
    ({"Type": None}, "docker event: Type: expected a non-empty string"),
    ({"Action": 3}, "docker event: Action: expected a non-empty string"),
    ({"Actor": "x"}, "docker event: Actor: expected an object"),
    ({"Actor": {"Attributes": {}}}, "docker event: Actor.ID: expected a string"),
    ({"Actor": {"ID": "x", "Attributes": {"a": 1}}}, "docker event: Actor.Attributes: expected an object of strings"),
    ({"timeNano": "1"}, "docker event: timeNano: expected a non-negative integer"),
    ({"timeNano": None, "time": None}, "docker event: timeNano (or time): expected a non-negative integer"),
    ({"timeNano": 10**30}, "docker event: timeNano: 1000000000000000000000000000000 is out of range"),
])
def test_malformed_docker_event_raises_value_error(change: dict[str, Any], message: str) -> None:
    """A malformed engine event is refused with what is wrong."""
    raw = {**_DOCKER, **change}
    with pytest.raises(ValueError) as info:
        map_docker_event(raw, host="h", observed=OBSERVED)
    assert str(info.value) == message


def test_docker_event_without_time_nano_uses_time() -> None:
    """An event with only `time` (seconds) is dated and identified by it."""
    raw = {k: v for k, v in _DOCKER.items() if k != "timeNano"}
    event = map_docker_event(raw, host="h", observed=OBSERVED)
    assert event is not None and event.id == "1795763396000000000:busybox:1.36:pull"


def test_docker_event_not_a_dict_raises() -> None:
    """A non-object event is refused."""
    with pytest.raises(ValueError, match="expected an object, got list"):
        map_docker_event([], host="h", observed=OBSERVED)  # type: ignore[arg-type]


@pytest.mark.parametrize(("ref", "expected"), [
    ("busybox", ("docker.io", "library/busybox", None, None)),
    ("busybox:1.36", ("docker.io", "library/busybox", "1.36", None)),
    ("team/app:4", ("docker.io", "team/app", "4", None)),
    ("127.0.0.1:5000/team/app:4", ("127.0.0.1:5000", "team/app", "4", None)),
    ("localhost/app", ("localhost", "app", None, None)),
    ("reg.example.com/a/b@sha256:" + "f" * 64, ("reg.example.com", "a/b", None, "sha256:" + "f" * 64)),
    ("sha256:" + "e" * 64, (None, None, None, "sha256:" + "e" * 64)),
])
def test_parse_image_reference(ref: str, expected: tuple[Any, ...]) -> None:
    """Image references normalise like Docker's (docker.io, library/)."""
    assert parse_image_reference(ref) == expected


@given(st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(), st.text(max_size=8),
                                                      st.dictionaries(st.text(max_size=4), st.text(max_size=4))),
                       max_size=6))
@settings(max_examples=300, deadline=None)
def test_map_docker_event_raises_only_value_error(raw: dict[str, Any]) -> None:
    """Arbitrary dicts either map to an Event or raise ValueError, nothing else."""
    try:
        event = map_docker_event(raw, host="h", observed=OBSERVED)
    except ValueError:
        return
    assert event is not None
    json.dumps(event.record())


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_parse_envelope_raises_only_value_error(body: bytes) -> None:
    """Arbitrary bodies either parse or raise ValueError, nothing else."""
    with contextlib.suppress(ValueError):
        parse_notification_envelope(body, host="h", observed=OBSERVED)
