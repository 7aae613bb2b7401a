"""Pure parse functions: registry log lines, registry notification envelopes and Docker engine events
into `Event`s (DESIGN.md, "Audit trail"). No I/O, no clock except `observed` defaulting to now.

Kinds (the vocabulary every source shares; README "Audit trail" lists it for users):

registry operations (access lines, notifications), by the distribution v2 API route:
  image.pull      GET/HEAD  /v2/<repo>/manifests/<ref>     (notification: pull of a manifest)
  image.push      PUT       /v2/<repo>/manifests/<ref>     (notification: push of a manifest)
  image.delete    DELETE    /v2/<repo>/manifests/<ref>     (notification: delete)
  blob.pull       GET/HEAD  /v2/<repo>/blobs/<digest>      (notification: pull of a blob)
  blob.push       PUT       /v2/<repo>/blobs/uploads/<id>  (notification: push of a blob)
  blob.mount      POST      /v2/<repo>/blobs/uploads/?mount=<digest>  (notification: mount)
  blob.upload     POST/PATCH/GET/DELETE on an upload session
  blob.delete     DELETE    /v2/<repo>/blobs/<digest>
  tags.list       GET       /v2/<repo>/tags/list
  catalog.list    GET       /v2/_catalog
  registry.ping   GET/HEAD  /v2/
  registry.request          any other request line
  registry.notification     a notification whose action regwarden does not know
A failed request keeps its operation kind with `outcome: failure` and its HTTP `status` (a 401 on
`PUT .../manifests/3` is an `image.push` that failed with 401: a denied push).

registry application records (JSON or logfmt):
  auth.failure    `error authenticating user "NAME": ...`: a client presented wrong credentials
  auth.challenge  `error authorizing context: ...`: the registry answered with a challenge (no or
                  bad credentials; every Docker client gets one before it logs in)
  registry.log    any other record (level, msg and request id kept)
  registry.unparsed  a line that is none of the above, kept verbatim (bounded) with the reason

Docker engine: `<Type>.<Action>` with the action's argument cut off (`exec_start: sh -c x` becomes
`container.exec_start`, the argument goes to detail): image.pull, image.push, image.tag, image.untag,
image.delete, container.create, container.start, container.die, container.exec_start,
volume.create, network.connect, ...
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from .. import redact
from ..events import Actor, Event, RegistryNames, iso, target_record, utcnow

__all__ = [
    "MAX_LINE_BYTES",
    "NOTIFICATION_MEDIA_TYPE",
    "RAW_KEEP_BYTES",
    "UNPARSED",
    "classify_route",
    "map_docker_event",
    "parse_image_reference",
    "parse_notification_envelope",
    "parse_registry_line",
]

NOTIFICATION_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
_NO_NAMES = RegistryNames()  # no registry configured: records name registries by address
UNPARSED = "registry.unparsed"
MAX_LINE_BYTES = 64 * 1024  # a longer line is not parsed (a log line is never that long)
RAW_KEEP_BYTES = 4096  # how much of an unparsed line the audit record keeps

Outcome = Literal["success", "failure", "unknown"]

# --------------------------------------------------------------------------- routes


_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_ROUTE = re.compile(
    r"^/v2/(?P<name>.+?)/(?:(?P<manifests>manifests)/(?P<ref>[^/]+)|(?P<tags>tags)/list"
    r"|blobs/(?P<uploads>uploads)/(?P<upload>[^/]*)|(?P<blobs>blobs)/(?P<digest>[^/]+))$")
_MANIFEST_KINDS = {"GET": "image.pull", "HEAD": "image.pull", "PUT": "image.push", "DELETE": "image.delete"}
_BLOB_KINDS = {"GET": "blob.pull", "HEAD": "blob.pull", "DELETE": "blob.delete"}


def classify_route(method: str, uri: str) -> tuple[str, str | None, str | None, str | None]:
    """`(kind, repository, tag, digest)` of a registry API request (see the module doc for kinds)."""
    path, _, query = uri.partition("?")
    if path in ("/v2/", "/v2"):
        return "registry.ping", None, None, None
    if path == "/v2/_catalog":
        return "catalog.list", None, None, None
    match = _ROUTE.match(path)
    if match is None:
        return "registry.request", None, None, None
    name = match["name"]
    if match["manifests"]:
        ref = match["ref"]
        tag, digest = (None, ref) if _DIGEST.match(ref) else (ref, None)
        return _MANIFEST_KINDS.get(method, "registry.request"), name, tag, digest
    if match["tags"]:
        return "tags.list", name, None, None
    if match["uploads"]:
        params = _query(query)
        if method == "POST" and "mount" in params:
            return "blob.mount", name, None, params["mount"]
        if method == "PUT":
            return "blob.push", name, None, params.get("digest")
        return "blob.upload", name, None, None
    return _BLOB_KINDS.get(method, "registry.request"), name, None, match["digest"]


def _query(query: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(query, keep_blank_values=True))


def _outcome(status: int | None) -> Outcome:
    if status is None:
        return "unknown"
    return "success" if status < 400 else "failure"


# --------------------------------------------------------------------------- registry log lines


def parse_registry_line(line: bytes, *, registry: str, host: str, observed: datetime | None = None,
                        address: str | None = None) -> Event:
    """One line of distribution's log stream (JSON record, logfmt record or combined access line).

    `registry` is the [[registries]] name the log belongs to, `address` its host:port (both go to
    the record's target).
    Never raises: a line that is none of these becomes a `registry.unparsed` Event keeping the first
    `RAW_KEEP_BYTES` of the line (`detail.raw`, or `detail.raw_b64` when it is not UTF-8) and why.
    Give every line of one read the same `observed` datetime: its text is computed once.
    """
    seen = observed if observed is not None else utcnow()
    try:
        return _parse_line(line, registry, address, host, seen)
    except Exception as exc:  # the contract: never raise, keep the line
        return _unparsed(line, registry, address, host, seen, f"parser error: {type(exc).__name__}: {exc}")


def _parse_line(line: bytes, registry: str, address: str | None, host: str, seen: datetime) -> Event:
    if len(line) > MAX_LINE_BYTES:
        return _unparsed(line, registry, address, host, seen,
                         f"line too long ({len(line)} bytes > {MAX_LINE_BYTES})")
    if line[:1] == b"{":  # the common case: logrus' JSON formatter; orjson checks UTF-8 too
        try:
            fields = orjson.loads(line)
        except orjson.JSONDecodeError:
            pass  # the slow path below says what is wrong (or accepts what only json.loads does)
        else:
            if type(fields) is dict:
                return _app_record(fields, "json", registry, address, host, seen)
    stripped = line.rstrip(b"\r\n")
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _unparsed(line, registry, address, host, seen, f"invalid UTF-8 at byte {exc.start}")
    if not text or text.isspace():
        return _unparsed(line, registry, address, host, seen, "empty line")
    if text.startswith("{"):
        try:
            fields = json.loads(text)  # NaN, integers beyond 64 bits, lone surrogates
        except ValueError as exc:
            return _unparsed(line, registry, address, host, seen, f"invalid JSON: {exc}")
        if not isinstance(fields, dict):
            return _unparsed(line, registry, address, host, seen, "JSON value is not an object")
        return _app_record(fields, "json", registry, address, host, seen)
    if not text.startswith("time="):
        access = _access_line(text, registry, address, host, seen)
        if access is not None:
            return access
        if " level=" not in text:
            return _unparsed(line, registry, address, host, seen, "not a JSON, logfmt or access log line")
    fields = _logfmt(text)
    if fields is None or "msg" not in fields:
        return _unparsed(line, registry, address, host, seen, "invalid logfmt record")
    return _app_record(fields, "logfmt", registry, address, host, seen)


def _registry_event(kind: str, when: datetime, when_iso: str, seen: datetime, host: str,
                    actor: dict[str, str], target: dict[str, str], status: int | None,
                    request_id: str | None, detail: dict[str, Any], outcome: Outcome | None = None) -> Event:
    """The Event of a registry log line, its record built directly (the ingest hot path: see
    `Event.__init__` for the same record from the general constructor). `outcome` defaults to the
    one of `status`."""
    return Event.from_record(
        {"time": when_iso, "observed": iso(seen), "source": "registry-log", "host": host, "kind": kind,
         "actor": actor, "target": target, "outcome": outcome or _outcome(status), "status": status,
         "request_id": request_id, "detail": detail}, when, seen)


def _unparsed(line: bytes, registry: str, address: str | None, host: str, seen: datetime, reason: str) -> Event:
    kept = line[:RAW_KEEP_BYTES]
    detail: dict[str, Any] = {"reason": reason, "length": len(line), "truncated": len(line) > len(kept)}
    try:
        detail["raw"] = kept.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(kept) - 3 and len(line) > len(kept):  # the cut split a character
            detail["raw"] = kept[: exc.start].decode("utf-8")
        else:
            detail["raw_b64"] = base64.b64encode(kept).decode("ascii")
    target = target_record(registry, None, None, None, address)
    return _registry_event(UNPARSED, seen, iso(seen), seen, host, {}, target, None, None, detail)


# -- application records (logrus JSON and text formatters carry the same keys)

_AUTH_FAILURE = re.compile(r'^error authenticating user "(?P<user>[^"\\]*(?:\\.[^"\\]*)*)"')
_AUTHORIZING = "error authorizing context"
_MISSING: Any = object()


def _app_record(fields: dict[str, Any], fmt: str, registry: str, address: str | None, host: str,
                seen: datetime) -> Event:
    """A logrus record (JSON or logfmt); takes `fields` apart (the caller's own dict). The ingest hot
    path, hence written out: the keys distribution writes are strings; anything else is made one,
    and "" counts as absent."""
    pop = fields.pop
    msg = pop("msg", None)
    level = pop("level", None)
    stamp = pop("time", _MISSING)
    method = pop("http.request.method", None)
    uri = pop("http.request.uri", None)
    status = pop("http.response.status", None)
    request_id = pop("http.request.id", None)
    user = pop("auth.user.name", None)
    addr = pop("http.request.remoteaddr", None)
    agent = pop("http.request.useragent", None)
    repository = pop("vars.name", None)
    reference = pop("vars.reference", None)
    digest = pop("vars.digest", None)
    pop("go.version", None)
    if type(msg) is not str:
        msg = _str(msg) or ""
    if type(method) is not str or not method:
        method = _str(method)
    if type(uri) is not str or not uri:
        uri = _str(uri)
    if type(status) is not int:
        status = _int(status)
    if type(request_id) is not str or not request_id:
        request_id = _str(request_id)

    actor: dict[str, str] = {}
    if user is not None and (user := _str(user)) is not None:
        actor["user"] = user
    if addr is not None and (addr := _str(addr)) is not None:
        actor["addr"] = addr
    if agent is not None and (agent := _str(agent)) is not None:
        actor["agent"] = agent
    tag = None
    if reference is not None and (reference := _str(reference)) is not None:
        if _DIGEST.match(reference):
            digest = _str(digest) or reference
        else:
            tag, digest = reference, _str(digest)
    elif digest is not None:
        digest = _str(digest)
    if repository is not None:
        repository = _str(repository)
    elif method and uri:
        _, repository, tag, route_digest = classify_route(method, uri)
        digest = digest or route_digest

    kind = "registry.log"
    outcome: Outcome = _outcome(status)
    detail: dict[str, Any] = {"format": fmt, "level": level if type(level) is str and level else _str(level),
                              "msg": msg}
    if msg.startswith("error "):
        auth = _AUTH_FAILURE.match(msg)
        if auth is not None:
            kind, outcome = "auth.failure", "failure"
            if "user" not in actor:
                actor["user"] = auth["user"].replace('\\"', '"')
        elif msg.startswith(_AUTHORIZING):
            kind, outcome = "auth.challenge", "failure"
            detail["reason"] = msg.rpartition(": ")[2]
    if method is not None:
        detail["method"] = method
    if uri is not None:
        detail["uri"] = uri
    if fields:  # what is left: the registry's other fields, kept (minus any that names a secret)
        detail["fields"] = redact.without_secret_keys(fields)

    when, when_iso = _time_and_iso(stamp)
    if when is None or when_iso is None:
        when, when_iso = seen, iso(seen)
        if stamp is not _MISSING:
            detail["time_raw"] = str(stamp)[:64]
    target = target_record(registry, repository, tag, digest, address)
    return _registry_event(kind, when, when_iso, seen, host, actor, target, status, request_id, detail, outcome)


_LOGFMT_PAIR = re.compile(r'\s*([^\s=]+)=(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s"]*))(?=\s|$)')


def _logfmt(text: str) -> dict[str, Any] | None:
    """logrus' text formatter: `key=value` or `key="quoted \\"value\\""`; None if it is not that."""
    fields: dict[str, Any] = {}
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        match = _LOGFMT_PAIR.match(text, pos)
        if match is None:
            return None
        key, quoted, bare = match.groups()
        fields[key] = _go_unquote(quoted) if quoted is not None else bare
        pos = match.end()
    return fields


_GO_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[abfnrtv\\\"'])")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"', "'": "'"}


def _go_unquote(value: str) -> str:
    """Undo Go's strconv.Quote (as used by logrus and gorilla's access log) on a quoted body.

    Go writes an invalid UTF-8 byte as `\\xNN`; it becomes U+FFFD (the line was not valid text)."""
    if "\\" not in value:
        return value
    return _GO_ESCAPE.sub(_go_escape, value)


def _go_escape(match: re.Match[str]) -> str:
    code = match[1]
    if code[0] == "x":
        byte = int(code[1:], 16)
        return chr(byte) if byte < 0x80 else "\ufffd"
    if code[0] in "uU":
        point = int(code[1:], 16)
        return chr(point) if point <= 0x10FFFF and not 0xD800 <= point <= 0xDFFF else "\ufffd"
    return _SIMPLE_ESCAPES[code]


# -- combined access lines (gorilla/handlers)

_ACCESS = re.compile(
    r'^(?P<addr>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] '
    r'"(?P<request>[^"\\]*(?:\\.[^"\\]*)*)" (?P<status>\d{3}) (?P<size>\d+|-)'
    r'(?: "(?P<referer>[^"\\]*(?:\\.[^"\\]*)*)" "(?P<agent>[^"\\]*(?:\\.[^"\\]*)*)")?$')
_ACCESS_TIME = "%d/%b/%Y:%H:%M:%S %z"


@functools.lru_cache(maxsize=256)  # access lines of the same second share their time text
def _access_time(text: str) -> tuple[datetime, str] | None:
    try:
        when = datetime.strptime(text, _ACCESS_TIME).astimezone(UTC)
    except ValueError:
        return None
    return when, iso(when)


def _access_line(text: str, registry: str, address: str | None, host: str, seen: datetime) -> Event | None:
    match = _ACCESS.match(text)
    if match is None:
        return None
    addr, _, user, stamp, request, status_text, size, referer, agent = match.groups()
    timed = _access_time(stamp)
    if timed is None:
        return None
    if "\\" in request:
        request = _go_unquote(request)
    method, _, rest = request.partition(" ")
    uri, _, proto = rest.rpartition(" ") if " " in rest else (rest, "", "")
    kind, repository, tag, digest = classify_route(method, uri)
    status = int(status_text)
    detail: dict[str, Any] = {"format": "access", "method": method, "uri": uri, "proto": proto,
                              "bytes": 0 if size == "-" else int(size)}
    if referer and (referer := _go_unquote(referer)):
        detail["referer"] = referer
    actor = {"addr": addr} if user == "-" else {"user": user, "addr": addr}
    if agent:
        actor["agent"] = _go_unquote(agent) if "\\" in agent else agent
    target = target_record(registry, repository, tag, digest, address)
    return _registry_event(kind, timed[0], timed[1], seen, host, actor, target, status, None, detail)


# -- small value helpers


def _str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _time(value: Any) -> datetime | None:
    """RFC 3339 with up to nanoseconds (Go's time format); None if it is not one."""
    if not isinstance(value, str) or len(value) < 20:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def _time_and_iso(value: Any) -> tuple[datetime, str] | tuple[None, None]:
    """`_time(value)` and its `iso()` text; Go's UTC times (`...:48.450527131Z`) are cut to
    microseconds as text, the same as `iso()` of the parsed time, without formatting it again."""
    when = _time(value)
    if when is None:
        return None, None
    text: str = value
    if len(text) >= 27 and text[-1] == "Z" and text[19] == "." and text[20:26].isdigit():
        return when, text[:26] + "Z"  # fromisoformat cuts nanoseconds to microseconds the same way
    return when, iso(when)


# --------------------------------------------------------------------------- notifications


_MANIFEST_MEDIA = ("application/vnd.docker.distribution.manifest.", "application/vnd.oci.image.manifest.",
                   "application/vnd.oci.image.index.", "application/vnd.docker.container.image.v1+json")
_NOTIFY_KINDS = {
    ("pull", "manifest"): "image.pull", ("push", "manifest"): "image.push",
    ("delete", "manifest"): "image.delete", ("pull", "blob"): "blob.pull", ("push", "blob"): "blob.push",
    ("delete", "blob"): "blob.delete", ("mount", "blob"): "blob.mount", ("mount", "manifest"): "blob.mount",
}


def parse_notification_envelope(body: bytes, *, host: str, observed: datetime | None = None,
                                names: RegistryNames = _NO_NAMES) -> list[Event]:
    """distribution's notification envelope `{"events": [...]}` into Events.

    Raises ValueError naming the first thing wrong (the receiver answers 400 with it). `id` is the
    notification event id (for dedup); `target.address` is the registry's address as the client used
    it (`request.host`), `target.registry` its configured name in `names` (else the address).
    """
    seen = observed if observed is not None else utcnow()
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise ValueError(f"body must be a JSON object, got {type(envelope).__name__}")
    events = envelope.get("events")
    if not isinstance(events, list):
        raise ValueError("body.events: expected a list of events")
    return [_notification(item, f"events[{i}]", host, seen, names) for i, item in enumerate(events)]


def _notification(item: Any, where: str, host: str, seen: datetime, names: RegistryNames) -> Event:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object, got {type(item).__name__}")
    event_id = _required_str(item, "id", where)
    action = _required_str(item, "action", where)
    stamp = _required_str(item, "timestamp", where)
    when = _time(stamp)
    if when is None:
        raise ValueError(f"{where}.timestamp: not an RFC 3339 time: {stamp[:64]!r}")
    target = _object(item, "target", where, required=True)
    request = _object(item, "request", where)
    actor = _object(item, "actor", where)
    source = _object(item, "source", where)
    repository = _required_str(target, "repository", f"{where}.target")
    tag = _optional_str(target, "tag", f"{where}.target")
    digest = _optional_str(target, "digest", f"{where}.target")
    media_type = _optional_str(target, "mediaType", f"{where}.target")
    url = _optional_str(target, "url", f"{where}.target") or ""
    is_blob = "/blobs/" in url or (media_type is not None and not media_type.startswith(_MANIFEST_MEDIA)
                                   and tag is None and "/manifests/" not in url)
    kind = _NOTIFY_KINDS.get((action, "blob" if is_blob else "manifest"), "registry.notification")
    detail: dict[str, Any] = {"action": action}
    if media_type is not None:
        detail["media_type"] = media_type
    size = target.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        detail["size"] = size
    method = _optional_str(request, "method", f"{where}.request")
    if method is not None:
        detail["method"] = method
    instance = _optional_str(source, "instanceID", f"{where}.source")
    if instance is not None:
        detail["instance_id"] = instance
    return Event(
        source="registry-notify", kind=kind, time=when, observed=seen, host=host,
        actor=Actor(user=_optional_str(actor, "name", f"{where}.actor"),
                    addr=_optional_str(request, "addr", f"{where}.request"),
                    agent=_optional_str(request, "useragent", f"{where}.request")),
        target=names.target(_optional_str(request, "host", f"{where}.request"), repository, tag, digest),
        outcome="success", request_id=_optional_str(request, "id", f"{where}.request"), id=event_id,
        detail=detail)


def _object(item: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> dict[str, Any]:
    value = item.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}.{key}: expected an object")
    return value


def _required_str(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}.{key}: expected a non-empty string")
    return value


def _optional_str(item: Mapping[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key}: expected a string, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- docker engine events

_DEFAULT_REGISTRY = "docker.io"


def parse_image_reference(ref: str) -> tuple[str | None, str | None, str | None, str | None]:
    """`(registry, repository, tag, digest)` of a Docker image reference as the engine reports it.

    `127.0.0.1:5000/team/app:4` -> ("127.0.0.1:5000", "team/app", "4", None); `busybox` ->
    ("docker.io", "library/busybox", None, None); an image id (`sha256:...`) -> (None, None, None, id).
    """
    if _DIGEST.match(ref):
        return None, None, None, ref
    name, _, digest = ref.partition("@")
    slash = name.find("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = _DEFAULT_REGISTRY, name if "/" in name else f"library/{name}"
    return registry, repository or None, tag or None, digest or None


def map_docker_event(raw: dict[str, Any], *, host: str, observed: datetime | None = None,
                     names: RegistryNames = _NO_NAMES) -> Event | None:
    """One Docker Engine event (API 1.41: Type, Action, Actor{ID, Attributes}, time, timeNano).

    `target.address` is the registry host of the image reference, `target.registry` its configured
    name in `names` (else the address).
    `id` is `f"{timeNano}:{Actor.ID}:{Action}"`, stable across reconnects (dedup). Raises ValueError
    naming what is wrong with a malformed event; returns None for an event without audit value
    (none today: every engine event is kept).
    """
    seen = observed if observed is not None else utcnow()
    if not isinstance(raw, dict):
        raise ValueError(f"docker event: expected an object, got {type(raw).__name__}")
    etype = raw.get("Type")
    action = raw.get("Action")
    actor = raw.get("Actor")
    if not isinstance(etype, str) or not etype:
        raise ValueError("docker event: Type: expected a non-empty string")
    if not isinstance(action, str) or not action:
        raise ValueError("docker event: Action: expected a non-empty string")
    if not isinstance(actor, dict):
        raise ValueError("docker event: Actor: expected an object")
    actor_id = actor.get("ID")
    if not isinstance(actor_id, str):
        raise ValueError("docker event: Actor.ID: expected a string")
    attributes = actor.get("Attributes") or {}
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise ValueError("docker event: Actor.Attributes: expected an object of strings")
    nanos = _docker_nanos(raw)
    try:
        when = datetime.fromtimestamp(nanos // 1_000_000_000, UTC) + timedelta(microseconds=nanos // 1000 % 1_000_000)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"docker event: timeNano: {nanos} is out of range") from None

    verb, _, argument = action.partition(":")
    detail: dict[str, Any] = {"type": etype, "action": verb, "actor_id": actor_id}
    if argument.strip():
        detail["argument"] = argument.strip()
    if attributes:
        detail["attributes"] = dict(attributes)
    scope = raw.get("scope")
    if isinstance(scope, str) and scope:
        detail["scope"] = scope
    registry = repository = tag = digest = None
    outcome: Outcome = "success"
    if etype == "image":
        ref = attributes.get("name") or actor_id
        registry, repository, tag, digest = parse_image_reference(ref)
        if _DIGEST.match(actor_id):
            detail["image_id"] = actor_id
            if digest == actor_id:
                digest = None
    elif etype == "container" and attributes.get("image"):
        registry, repository, tag, digest = parse_image_reference(attributes["image"])
        if verb in ("die", "exec_die") and attributes.get("exitCode", "0") != "0":
            outcome = "failure"
    return Event(
        source="docker", kind=f"{etype}.{verb}", time=when, observed=seen, host=host,
        target=names.target(registry, repository, tag, digest),
        outcome=outcome, id=f"{nanos}:{actor_id}:{action}", detail=detail)


def _docker_nanos(raw: Mapping[str, Any]) -> int:
    nanos = raw.get("timeNano")
    if nanos is None:
        seconds = raw.get("time")
        if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds >= 0:
            return seconds * 1_000_000_000
        raise ValueError("docker event: timeNano (or time): expected a non-negative integer")
    if not isinstance(nanos, int) or isinstance(nanos, bool) or nanos < 0:
        raise ValueError("docker event: timeNano: expected a non-negative integer")
    return nanos

