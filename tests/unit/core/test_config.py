"""Config loading: valid files load into frozen models; every kind of mistake names FILE:LINE: key.path."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from regwarden.config import check_host, format_duration, load_config, parse_duration
from regwarden.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
DAEMON = """\
[daemon]
state_dir = "/tmp/rw-state"
audit_log = "/tmp/rw-audit.jsonl"
"""
VAULT = """
[vault]
address = "http://127.0.0.1:8200"
auth = { method = "token", token_env = "RW_TEST_TOKEN" }
"""
DOCKER = """
[docker]
client_configs = ["/tmp/rw-docker/config.json"]
"""


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p).replace(str(path), "FILE") for p in info.value.problems]


def test_example_config_loads() -> None:
    """config.example.toml, which documents every option, is a valid config as shipped."""
    cfg = load_config(REPO / "config.example.toml")
    assert cfg.daemon.listen == "127.0.0.1:9477"
    assert cfg.registries[0].credential == cfg.credentials[0].name


def test_daemon_table_alone_is_a_valid_config(tmp_path: Path) -> None:
    """Every table but [daemon] is optional."""
    path = tmp_path / "c.toml"
    path.write_text(DAEMON)
    cfg = load_config(path)
    assert cfg.registries == [] and cfg.vault is None and cfg.sinks == []


def test_models_are_frozen(tmp_path: Path) -> None:
    """Loaded config cannot be changed by accident at run time."""
    path = tmp_path / "c.toml"
    path.write_text(DAEMON)
    cfg = load_config(path)
    with pytest.raises(ValueError, match="frozen"):
        cfg.daemon.listen = "0.0.0.0:1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(DAEMON + "colour = 'blue'\n", "FILE:4: daemon.colour: unknown key", id="unknown-key"),
        pytest.param(DAEMON + '\n[[registries]]\nname = "r"\nurl = "http://r:5000"\nfailures_before_alert = "three"\n',
                     "FILE:8: registries[0].failures_before_alert: Input should be a valid integer", id="wrong-type"),
        pytest.param(DAEMON + '\n[[registries]]\nname = "r"\nurl = "http://r:5000"\nprobe_interval = "5 parsecs"\n',
                     "FILE:8: registries[0].probe_interval: invalid duration '5 parsecs'", id="bad-duration"),
        pytest.param(DAEMON + '\n[[registries]]\nname = "r"\nurl = "ftp://r"\n',
                     "FILE:7: registries[0].url: invalid URL 'ftp://r'", id="bad-url"),
        pytest.param(DAEMON + 'listen = "localhost"\n',
                     "FILE:4: daemon.listen: expected HOST:PORT", id="bad-listen"),
        pytest.param(DAEMON + '\n[[registries]]\nname = "r"\nurl = "http://a:1"\n\n[[registries]]\nname = "r"\n'
                     'url = "http://b:1"\n',
                     "FILE:10: registries[1].name: duplicate name 'r' (first at registries[0])", id="duplicate-name"),
        pytest.param(DAEMON + '\n[[registries]]\nname = "r"\nurl = "http://a:1"\ncredential = "ghost"\n',
                     "FILE:8: registries[0].credential: undefined credential 'ghost'", id="undefined-credential"),
        pytest.param(DAEMON + '\n[[sources.registry_logs]]\npath = "/tmp/x.log"\nregistry = "ghost"\n',
                     "FILE:7: sources.registry_logs[0].registry: undefined registry 'ghost'", id="undefined-registry"),
        pytest.param(DAEMON + '\n[[sinks]]\nname = "s"\ntype = "carrier-pigeon"\n',
                     "FILE:7: sinks[0].type: unknown sink type 'carrier-pigeon'", id="undefined-sink-type"),
        pytest.param(DAEMON + '\n[[sinks]]\nname = "s"\ntype = "log"\nlevel = "shout"\n',
                     "FILE:8: sinks[0].level: Input should be 'info', 'warning' or 'error'", id="bad-sink-option"),
        pytest.param(DAEMON + '\n[vault]\nauth = { method = "token", token_file = "/t" }\n',
                     "FILE:5: vault.address: required key is missing", id="missing-key"),
        pytest.param(DAEMON + '\n[vault]\naddress = ["https://a:8200", "https://a:8200"]\n'
                     'auth = { method = "token", token_file = "/t" }\n',
                     "FILE:6: vault.address: address 'https://a:8200' is listed twice",
                     id="duplicate-vault-node"),
        pytest.param(DAEMON + '\n[vault]\naddress = []\nauth = { method = "token", token_file = "/t" }\n',
                     "FILE:6: vault.address: needs at least one address", id="no-vault-node"),
        pytest.param(DAEMON + '\n[vault]\naddress = ["https://a:8200", "ftp://b"]\n'
                     'auth = { method = "token", token_file = "/t" }\n',
                     "FILE:6: vault.address[1]: invalid URL 'ftp://b'", id="bad-vault-node"),
        pytest.param(DAEMON + '\n[vault]\naddress = "https://v:8200"\nauth = { method = "kerberos" }\n',
                     "FILE:7: vault.auth: unknown method 'kerberos'", id="unknown-auth-method"),
        pytest.param(DAEMON + VAULT + DOCKER + '\n[[registries]]\nname = "r"\nurl = "http://a:1"\ncredential = "c"\n'
                     '\n[[credentials]]\nname = "c"\nprovider = "htpasswd"\nvault_path = "secret/c"\n'
                     'rotate_every = "1h"\nwatch_interval = "1m"\noverlap = "1m"\n'
                     'htpasswd = { file = "/tmp/h", usernames = ["a", "b"] }\n',
                     "FILE:17: credentials[0]: overlap must be longer than 2 x watch_interval", id="short-overlap"),
        pytest.param(DAEMON + VAULT + DOCKER + '\n[[registries]]\nname = "r"\nurl = "http://a:1"\ncredential = "c"\n'
                     '\n[[credentials]]\nname = "c"\nvault_path = "nomount"\n',
                     "FILE:19: credentials[0].vault_path: expected MOUNT/PATH", id="bad-vault-path"),
        pytest.param(DAEMON + "state_dir = [\n", "FILE:4: (top level): TOML syntax error", id="toml-syntax"),
    ],
)
def test_bad_config_names_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    """Each kind of mistake is reported as FILE:LINE: key.path: what is wrong."""
    problems = problems_of(tmp_path, text)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """A file with several mistakes gets one line per mistake, in file order."""
    problems = problems_of(tmp_path, DAEMON + 'listen = "x"\nbogus = 1\n\n[alerts]\ngroup_wait = "soon"\n')
    assert [p.split(": ")[1] for p in problems] == ["daemon.listen", "daemon.bogus", "alerts.group_wait"]


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("7d", 604800),
                                                ("250ms", 0.25), ("2w", 1209600), (15, 15)])
def test_durations_parse(text: str | int, seconds: float) -> None:
    """Durations are strings such as 30s, 5m, 1h30m, 7d (or plain seconds)."""
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["5 parsecs", "", "10", "m5", "-3s", "1h 2x", True])
def test_bad_durations_are_refused(text: object) -> None:
    """Anything that is not a duration is refused with a message that shows the value."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    """format_duration writes what parse_duration reads."""
    for text in ("1m30s", "2d", "4h", "250ms"):
        assert format_duration(parse_duration(text)) == text


def _host_config(tmp_path: Path, token_mode: int) -> Path:
    token = tmp_path / "notify-token"
    token.write_text("s3cr3t-notify-token\n")
    token.chmod(token_mode)
    path = tmp_path / "config.toml"
    path.write_text(DAEMON + f'\n[sources.registry_notifications]\ntoken_file = "{token}"\n'
                    f'\n[vault]\naddress = "https://v:8200"\nca_cert = "{tmp_path}/missing-ca.pem"\n'
                    f'auth = {{ method = "token", token_file = "{token}" }}\n')
    return path


def test_host_check_refuses_group_readable_secret_and_missing_file(tmp_path: Path) -> None:
    """Host checks name a secret file readable by others and a referenced file that does not exist."""
    path = _host_config(tmp_path, 0o644)
    problems = [str(p).replace(str(path), "FILE") for p in check_host(load_config(path), str(path))]
    assert any(p.startswith("FILE:6: sources.registry_notifications.token_file: secret file") and "chmod 600" in p
               for p in problems), problems
    assert any(p.startswith("FILE:10: vault.ca_cert: file") and "does not exist" in p for p in problems), problems
    assert any(p.startswith("FILE:11: vault.auth.token_file: secret file") for p in problems), problems


def test_host_check_passes_private_secret(tmp_path: Path) -> None:
    """A 0600 secret file raises no problem (only the missing CA does)."""
    path = _host_config(tmp_path, 0o600)
    problems = check_host(load_config(path), str(path))
    assert [p.key for p in problems] == ["vault.ca_cert"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "regwarden", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO / "daemon")})


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    """check-config exits 0 on the example (schema only) and 1 with the problem lines on a bad file."""
    ok = _cli("check-config", "--schema-only", "-c", str(REPO / "config.example.toml"))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(DAEMON + 'listen = "nowhere"\n')
    result = _cli("check-config", "-c", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f'{bad}:4: daemon.listen: expected HOST:PORT such as "127.0.0.1:9477", got \'nowhere\'')


def test_run_refuses_bad_config_with_the_same_messages(tmp_path: Path) -> None:
    """`regwarden run` does not start on an invalid config and prints the same problem lines."""
    path = _host_config(tmp_path, 0o640)
    result = _cli("run", "-c", str(path))
    assert result.returncode == 2
    assert "sources.registry_notifications.token_file: secret file" in result.stderr
    assert "s3cr3t" not in result.stderr + result.stdout


def test_help_imports_no_subcommand_module() -> None:
    """`regwarden --help` lists every command without importing the lazy ones (keeps it fast)."""
    code = ("import sys; from click.testing import CliRunner; from regwarden.cli import main, LAZY_COMMANDS;"
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output;"
            "mods = {m.split(':')[0] for m in LAZY_COMMANDS.values()};"
            "print(sorted(m for m in mods if m in sys.modules)); print(all(n in r.output for n in LAZY_COMMANDS))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split("\n")[:2] == ["[]", "True"], result.stderr


@pytest.mark.parametrize(("url", "host_port"), [("https://reg.example:5000", "reg.example:5000"),
                                                ("https://reg.example", "reg.example"),
                                                ("https://[fd00::5]:5443", "[fd00::5]:5443")])
def test_registry_host_port_is_dockers_name(url: str, host_port: str) -> None:
    """host_port names the registry as Docker does in config.json and certs.d (IPv6 in brackets)."""
    from regwarden.config import RegistryConfig

    assert RegistryConfig(name="r", url=url).host_port == host_port


@pytest.mark.parametrize(("address", "expected"), [
    ('"https://v:8200/"', ["https://v:8200"]),
    ('["https://a:8200", "https://b:8200/"]', ["https://a:8200", "https://b:8200"]),
])
def test_vault_address_is_one_url_or_the_list_of_a_clusters_nodes(tmp_path: Path, address: str,
                                                                   expected: list[str]) -> None:
    """`[vault].address` accepts a single URL or a list of node URLs; both load as a list."""
    path = tmp_path / "config.toml"
    path.write_text(DAEMON + f'\n[vault]\naddress = {address}\nauth = {{ method = "token", token_env = "T" }}\n')
    vault = load_config(path).vault
    assert vault is not None
    assert vault.address == expected
