"""Events hold their audit record: built once, in the trail's layout, with no secret-named key in it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from regwarden import redact
from regwarden.audit.parse import map_docker_event, parse_notification_envelope, parse_registry_line
from regwarden.events import Actor, Event, RegistryNames, Target

AT = datetime(2026, 11, 27, 7, 9, 50, 123456, tzinfo=UTC)
SEEN = AT + timedelta(seconds=2)


def test_the_record_has_the_trail_layout() -> None:
    """Times in UTC with microseconds and Z; actor and target without empty members; id and detail
    only when given."""
    event = Event(source="regwarden", kind="credential.applied", time=AT.astimezone(timezone(timedelta(hours=2))),
                  observed=SEEN, host="h1", actor=Actor(user="ci"), target=Target(registry="r", tag="1"),
                  outcome="success", status=200)
    assert event.record() == {
        "time": "2026-11-27T07:09:50.123456Z", "observed": "2026-11-27T07:09:52.123456Z", "source": "regwarden",
        "host": "h1", "kind": "credential.applied", "actor": {"user": "ci"}, "target": {"registry": "r", "tag": "1"},
        "outcome": "success", "status": 200, "request_id": None}
    assert event.actor == Actor(user="ci") and event.target == Target(registry="r", tag="1")
    assert event.detail == {} and event.id is None and event.time == AT and event.observed == SEEN


def test_a_secret_named_detail_key_never_enters_the_record() -> None:
    """The value of a key that names a secret is replaced when the Event is made, at any depth."""
    event = Event(source="docker", kind="container.create", time=AT, observed=SEEN,
                  detail={"attributes": {"com.acme.db_password": "pw-123456", "image": "app"}, "token": "t-123456"})
    assert event.detail == {"attributes": {"com.acme.db_password": redact.REDACTED, "image": "app"},
                            "token": redact.REDACTED}


def test_replace_changes_only_what_it_is_given() -> None:
    event = Event(source="registry-log", kind="image.pull", time=AT, observed=SEEN, host="h",
                  actor=Actor(addr="10.0.0.1"), request_id="r1", detail={"a": 1})
    changed = event.replace(detail={"a": 1, "truncated": True})
    assert changed.detail == {"a": 1, "truncated": True} and event.detail == {"a": 1}
    assert {k: v for k, v in changed.record().items() if k != "detail"} == \
        {k: v for k, v in event.record().items() if k != "detail"}
    assert changed != event and event.replace() == event


def test_parsers_build_the_record_the_constructor_builds() -> None:
    """The registry log fast path writes the same record as the general constructor would."""
    lines = [
        b'{"go.version":"go1.19.8","http.request.host":"127.0.0.1:5000","http.request.id":"a1",'
        b'"http.request.method":"GET","http.request.remoteaddr":"127.0.0.1:40000","http.request.uri":"/v2/",'
        b'"http.request.useragent":"curl/7.88.1","level":"info","msg":"response completed",'
        b'"http.response.status":401,"time":"2026-11-27T07:09:50.522530917Z"}',
        b'127.0.0.1 - alice [27/Nov/2026:07:09:50 +0000] "GET /v2/team/app/manifests/1 HTTP/1.1" 200 527 "" '
        b'"docker/20.10.24"',
        b'time="2026-11-27T07:09:50.5+01:00" level=error msg="error authenticating user \\"bob\\": bad"',
        b"\xff\xfe not text",
    ]
    for line in lines:
        event = parse_registry_line(line, registry="internal", host="h", observed=SEEN)
        assert event.replace().record() == event.record(), line
    envelope = (b'{"events":[{"id":"e1","timestamp":"2026-11-27T07:09:50.5Z","action":"push","target":{'
                b'"mediaType":"application/vnd.docker.distribution.manifest.v2+json","repository":"team/app",'
                b'"tag":"1","digest":"sha256:' + b"a" * 64 + b'"},"request":{"host":"r:5000"},"actor":{"name":"ci"}}]}')
    for event in parse_notification_envelope(envelope, host="h", observed=SEEN):
        assert event.replace().record() == event.record()
    docker = map_docker_event({"Type": "image", "Action": "pull", "Actor": {"ID": "busybox:1", "Attributes": {
        "name": "busybox:1"}}, "timeNano": 1_764_227_390_000_000_000}, host="h", observed=SEEN)
    assert docker is not None and docker.replace().record() == docker.record()


def test_registry_names_match_an_address_as_clients_write_it() -> None:
    """Case, the default port and Docker Hub's aliases do not matter; an unknown address is its own
    name; the record's target carries both."""
    names = RegistryNames([("team", "Reg.Example.com:443"), ("hub", "registry-1.docker.io"),
                           ("local", "127.0.0.1:5000"), ("again", "127.0.0.1:5000")])
    assert [names.name(a) for a in ("reg.example.com", "REG.example.com:443", "docker.io", "index.docker.io",
                                    "127.0.0.1:5000", "127.0.0.1:5001", "reg.example.com:5000")] == [
        "team", "team", "hub", "hub", "local", None, None]
    assert names.target("reg.example.com", "a/b", "1").record() == {
        "registry": "team", "address": "reg.example.com", "repository": "a/b", "tag": "1"}
    assert names.target("10.0.0.1:80").record() == {"registry": "10.0.0.1:80", "address": "10.0.0.1:80"}
    assert names.target(None, digest="sha256:" + "0" * 64) == Target(digest="sha256:" + "0" * 64)
    event = Event(source="docker", kind="image.pull", time=AT, target=names.target("127.0.0.1:5000", "x"))
    assert event.target == Target(registry="local", repository="x", address="127.0.0.1:5000")
    assert event.target.host == "127.0.0.1:5000" and Target(registry="old-record").host == "old-record"
