"""The posture checklist's pure parts: verdicts from scan records, host-name matching, cipher classes,
/proc parsing and exposure classes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from regwarden.audit.detectors import AuthFailureBurst
from regwarden.events import Actor, Event, Target, utcnow
from regwarden.posture.checks import (
    CHECKS,
    AuthScan,
    Exposure,
    Outcome,
    TlsScan,
    WeakCipher,
    address_class,
    classify_cipher,
    evaluate,
    hostname_matches,
)
from regwarden.posture.httpscan import USER_AGENT, is_own_attempt
from regwarden.posture.sockets import Listener, exposure_of, parse_fib_trie, parse_if_inet6, parse_proc_net_tcp

NOW = 1_800_000_000.0
GOOD_TLS = TlsScan(trusted=True, leaf_self_signed=False, hostname_matches=True, names=("reg.example",),
                   not_after=NOW + 90 * 86400)
CLOSED = AuthScan(https=True, v2_status=401, open=False, schemes=("basic",), anonymous_pull=False,
                  anonymous_push=False, catalog_open=False, default_checked=True, default_attempts=5)


def outcomes(*, tls: TlsScan | None = GOOD_TLS, auth: AuthScan | None = CLOSED, exposure: Exposure | None = None,
             private: bool = True) -> dict[str, Outcome]:
    found = evaluate(tls=tls, auth=auth, exposure=exposure, private=private, tls_warning_seconds=14 * 86400, now=NOW)
    return {o.check: o for o in found}


def firing(**kwargs: object) -> set[str]:
    return {name for name, o in outcomes(**kwargs).items() if o.firing}  # type: ignore[arg-type]


def test_a_clean_endpoint_passes_every_check_it_can_judge() -> None:
    result = outcomes()
    assert {name for name, o in result.items() if o.firing is False} == set(CHECKS) - {"exposure"}
    assert result["exposure"].firing is None  # not scanned


@pytest.mark.parametrize(("tls", "expected"), [
    (TlsScan(trusted=True, hostname_matches=True, leaf_self_signed=False, legacy_protocols=("TLSv1", "TLSv1.1")),
     {"tls_legacy_protocol"}),
    (TlsScan(trusted=False, verify_error="self-signed certificate", hostname_matches=True, leaf_self_signed=True),
     {"tls_untrusted_chain", "tls_self_signed"}),
    (TlsScan(trusted=True, hostname_matches=True, leaf_self_signed=True), {"tls_self_signed"}),  # pinned via ca_cert
    (TlsScan(trusted=True, hostname_matches=False, leaf_self_signed=False, names=("other.example",)),
     {"tls_hostname_mismatch"}),
    (TlsScan(trusted=True, hostname_matches=True, leaf_self_signed=False, not_after=NOW + 86400), {"tls_expiring"}),
    (TlsScan(trusted=True, hostname_matches=True, leaf_self_signed=False, weak_ciphers=(
        WeakCipher("AES256-GCM-SHA384", "TLSv1.2", "no forward secrecy (RSA key exchange)", "warning"),)),
     {"tls_weak_cipher"}),
])
def test_tls_findings(tls: TlsScan, expected: set[str]) -> None:
    assert firing(tls=tls) == expected


def test_weak_cipher_severity_is_the_worst_and_the_detail_is_grouped() -> None:
    ciphers = (*(WeakCipher(f"AES{i}-SHA", "TLSv1.2", "no forward secrecy (RSA key exchange)", "warning")
                 for i in range(5)), WeakCipher("AECDH-AES256-SHA", "TLSv1.2", "anonymous key exchange", "critical"))
    outcome = outcomes(tls=TlsScan(trusted=True, hostname_matches=True, leaf_self_signed=False,
                                   weak_ciphers=ciphers))["tls_weak_cipher"]
    assert outcome.severity == "critical"
    assert outcome.detail.startswith("accepts anonymous key exchange: AECDH-AES256-SHA (TLSv1.2); no forward")
    assert outcome.detail.endswith("(+2 more)")


def test_an_endpoint_that_did_not_answer_is_unknown_not_passing() -> None:
    result = outcomes(tls=TlsScan(error="TLS scan timed out"), auth=AuthScan(error="auth scan failed: ConnectTimeout"))
    assert all(o.firing is None for name, o in result.items() if name != "plain_http")
    assert result["tls_untrusted_chain"].detail == "TLS scan timed out"


def test_plain_http_has_no_tls_verdicts() -> None:
    result = outcomes(tls=None, auth=AuthScan(https=False, v2_status=401, open=False, schemes=("basic",)))
    assert result["plain_http"].firing is True
    assert result["basic_auth_plain_http"].firing is True
    assert all(result[name].firing is None for name in CHECKS if name.startswith("tls_"))


@pytest.mark.parametrize(("auth", "private", "expected"), [
    (AuthScan(v2_status=200, open=True, anonymous_pull=True, anonymous_push=True, catalog_open=True), True,
     {"anonymous_access", "anonymous_push", "catalog_anonymous"}),  # open /v2/ is the prober's alert, not pull's
    (AuthScan(v2_status=200, open=True, anonymous_pull=True, anonymous_push=False, catalog_open=True), False, set()),
    (AuthScan(v2_status=401, open=False, schemes=("bearer",), realm="https://auth.example/token",
              anonymous_pull=True, anonymous_push=False, catalog_open=False), True, {"anonymous_pull"}),
    (AuthScan(v2_status=401, open=False, schemes=("bearer",), realm="http://auth.example/token",
              registry_host="reg.example", anonymous_pull=False, anonymous_push=False, catalog_open=False), True,
     {"token_realm_insecure"}),
    (AuthScan(v2_status=401, open=False, schemes=("basic",), anonymous_pull=False, anonymous_push=False,
              catalog_open=False, default_checked=True, default_user="admin", default_attempts=1), True,
     {"default_credentials"}),
])
def test_auth_findings(auth: AuthScan, private: bool, expected: set[str]) -> None:
    assert firing(auth=auth, private=private) == expected


def test_insecure_realm_says_which_host() -> None:
    auth = AuthScan(v2_status=401, open=False, schemes=("bearer",), realm="http://auth.example:5001/token",
                    registry_host="reg.example:5000")
    assert "another host (auth.example)" in outcomes(auth=auth)["token_realm_insecure"].detail
    same = AuthScan(v2_status=401, open=False, schemes=("bearer",), realm="http://REG.example:5001/token",
                    registry_host="reg.example:5000")
    assert "on the registry's own host" in outcomes(auth=same)["token_realm_insecure"].detail


def test_default_credentials_unknown_when_not_tried() -> None:
    auth = AuthScan(v2_status=401, open=False, schemes=("basic",))
    assert "default_credentials" not in outcomes(auth=auth)


def test_default_credentials_detail_names_the_user_never_the_password() -> None:
    auth = AuthScan(v2_status=401, open=False, schemes=("basic",), default_checked=True, default_user="admin",
                    default_attempts=2)
    detail = outcomes(auth=auth)["default_credentials"].detail
    assert "'admin'" in detail
    assert "Harbor12345" not in detail


@pytest.mark.parametrize(("exposure", "firing_", "severity"), [
    (Exposure(checked=True, actual="public", expected="loopback", listen=("0.0.0.0:5000",)), True, "critical"),
    (Exposure(checked=True, actual="private", expected="loopback", listen=("[::]:5000",)), True, "warning"),
    (Exposure(checked=True, actual="loopback", expected="loopback"), False, "warning"),
    (Exposure(checked=True, actual="private", expected="public"), False, "warning"),
    (Exposure(detail="a registry on another host"), None, "critical"),
])
def test_exposure(exposure: Exposure, firing_: bool | None, severity: str) -> None:
    outcome = outcomes(exposure=exposure)["exposure"]
    assert (outcome.firing, outcome.severity) == (firing_, severity)


@pytest.mark.parametrize(("host", "dns", "ips", "expected"), [
    ("reg.example", ["reg.example"], [], True),
    ("REG.example.", ["reg.EXAMPLE"], [], True),
    ("a.reg.example", ["*.reg.example"], [], True),
    ("a.b.reg.example", ["*.reg.example"], [], False),  # a wildcard covers one label
    ("reg.example", ["*.reg.example"], [], False),
    ("a.example", ["*.example"], [], False),  # no wildcard over a bare public suffix-like name
    ("a.reg.example", ["a*.reg.example"], [], False),  # partial-label wildcards are refused
    ("127.0.0.1", ["127.0.0.1"], [], False),  # an IP needs an IP entry
    ("127.0.0.1", [], ["127.0.0.1"], True),
    ("[::1]", [], ["::1"], True),
    ("reg.example", [], [], False),
])
def test_hostname_matches(host: str, dns: list[str], ips: list[str], expected: bool) -> None:
    assert hostname_matches(host, dns, ips) is expected


@pytest.mark.parametrize(("args", "expected"), [
    (("ECDHE-RSA-AES128-GCM-SHA256", "kx-ecdhe", "auth-rsa", "aes-128-gcm", None), None),
    (("AES256-GCM-SHA384", "kx-rsa", "auth-rsa", "aes-256-gcm", None), "warning"),
    (("AECDH-AES256-SHA", "kx-ecdhe", "auth-null", "aes-256-cbc", "sha1"), "critical"),
    (("NULL-SHA256", "kx-rsa", "auth-rsa", "null", "sha256"), "critical"),
    (("DES-CBC3-SHA", "kx-rsa", "auth-rsa", "des-ede3-cbc", "sha1"), "critical"),
    (("RC4-MD5", "kx-rsa", "auth-rsa", "rc4", "md5"), "critical"),
])
def test_classify_cipher(args: tuple[str, str, str, str, str | None], expected: str | None) -> None:
    verdict = classify_cipher(*args)
    assert (None if verdict is None else verdict[1]) == expected


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.1", "private"),
    ("fd00::2", "private"), ("fe80::1", "private"), ("100.64.1.1", "private"), ("8.8.8.8", "public"),
    ("2001:4860::8888", "public"), ("::ffff:10.0.0.1", "private"),
])
def test_address_class(address: str, expected: str) -> None:
    assert address_class(address) == expected


PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1195 1 0 100 0 0 10 0
   1: 0100007F:1389 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12083 1 0 100 0 0 10 0
   2: 0100007F:1388 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0 100 0 0 10 0
   3: garbage
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1388 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:138A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 778 1 0 100 0 0 10 0
"""  # noqa: E501


def test_parse_proc_net_tcp_keeps_listeners_only() -> None:
    assert parse_proc_net_tcp(PROC_TCP, ipv6=False) == [Listener("0.0.0.0", 5000, 1195),
                                                        Listener("127.0.0.1", 5001, 12083)]
    assert parse_proc_net_tcp(PROC_TCP6, ipv6=True) == [Listener("::", 5000, 777), Listener("::1", 5002, 778)]


def test_local_addresses_from_proc() -> None:
    fib = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
           |-- 127.0.0.1
              /32 host LOCAL
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
"""
    assert parse_fib_trie(fib) == {"127.0.0.1", "192.0.2.2"}
    inet6 = ("fd000000000000000000000000000002 04 40 00 82     eth0\n"
             "00000000000000000000000000000001 01 80 10 80       lo\nshort line\n")
    assert parse_if_inet6(inet6) == {"fd00::2", "::1"}


@pytest.mark.parametrize(("listeners", "local", "expected"), [
    ([Listener("127.0.0.1", 5000, 1)], ["127.0.0.1", "10.0.0.5"], "loopback"),
    ([Listener("0.0.0.0", 5000, 1)], ["127.0.0.1", "10.0.0.5"], "private"),
    ([Listener("0.0.0.0", 5000, 1)], ["127.0.0.1", "10.0.0.5", "2001:db8::1", "8.8.4.4"], "public"),
    ([Listener("0.0.0.0", 5000, 1)], ["127.0.0.1", "fd00::1", "2a00:1450::1"], "loopback"),  # v4 bind: v6 aside
    ([Listener("::", 5000, 1)], ["127.0.0.1", "2a00:1450::1"], "public"),
    ([], ["127.0.0.1"], None),
])
def test_exposure_of(listeners: list[Listener], local: list[str], expected: str | None) -> None:
    assert exposure_of(listeners, local) == expected


def failure(agent: str | None) -> Event:
    now = utcnow()
    return Event(source="registry-log", kind="auth.failure", time=now, observed=now, host="h",
                 actor=Actor(user="admin", addr="10.0.0.9:4000", agent=agent), target=Target(registry="r"))


def test_auth_failure_burst_ignores_this_process_posture_logins_only() -> None:
    rule = AuthFailureBurst(3, timedelta(minutes=1))
    assert is_own_attempt(USER_AGENT)
    assert not is_own_attempt("regwarden-posture/0.1.0 (0000000000000000)")  # a borrowed name is not ours
    assert [rule.observe(failure(USER_AGENT)) for _ in range(5)] == [[]] * 5
    signals = [s for _ in range(3) for s in rule.observe(failure("regwarden-posture/0.1.0 (forged)"))]
    assert [s.labels["alertname"] for s in signals] == ["RegistryAuthFailureBurst"]
