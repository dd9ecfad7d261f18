"""Security settings: TLS files, secrets given in files, the API token and the bind addresses."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from auditgen.amqp.tls import ClientTLS
from auditgen.config import ConfigError, load_settings

AMQPS = {"RABBITMQ_URL": "amqps://app@rabbit.example/"}


@pytest.fixture
def pems(tmp_path: Path) -> dict[str, str]:
    """A CA, a client certificate (with its chain) and key, and another key, as PEM files."""
    ca = trustme.CA()
    client = ca.issue_cert("auditgen-client")
    other = trustme.CA().issue_cert("someone-else")
    files = {
        "ca": ca.cert_pem,
        "cert": client.cert_chain_pems[0],
        "key": client.private_key_pem,
        "other_key": other.private_key_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(tmp_path / f"{name}.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    return {name: str(tmp_path / f"{name}.pem") for name in [*files, "junk"]}


def _error(environ: dict[str, str], options: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(options or {}, environ, {})
    assert "\n" not in str(info.value)
    return str(info.value)


def test_tls_defaults_check_the_broker_name_against_the_system_trust_store() -> None:
    """With only an amqps:// URL: no CA file (system store), no client certificate, name checked."""
    s = load_settings({}, AMQPS, {})
    assert s.broker.node.tls
    assert (s.tls.ca_file, s.tls.cert_file, s.tls.key_file, s.tls.verify_hostname) == (None, None, None, True)


def test_tls_files_are_read_and_checked_at_start(pems: dict[str, str]) -> None:
    """A CA bundle, a client certificate and its key load into settings the publisher can use."""
    s = load_settings(
        {"rabbitmq-tls-verify-hostname": "no"},
        {
            **AMQPS,
            "RABBITMQ_TLS_CA_FILE": pems["ca"],
            "RABBITMQ_TLS_CERT_FILE": pems["cert"],
            "RABBITMQ_TLS_KEY_FILE": pems["key"],
        },
        {},
    )
    assert (s.tls.ca_file, s.tls.cert_file, s.tls.key_file) == (pems["ca"], pems["cert"], pems["key"])
    assert s.tls.verify_hostname is False
    tls = ClientTLS.load(s.tls.ca_file, s.tls.cert_file, s.tls.key_file, s.tls.verify_hostname)
    assert tls.creator("rabbit.example") is not None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"RABBITMQ_TLS_CA_FILE": "/nonexistent/ca.pem"}, "invalid RABBITMQ_TLS_CA_FILE (environment)"),
        ({"RABBITMQ_TLS_CA_FILE": "{junk}"}, "RABBITMQ_TLS_CA_FILE (environment): '{junk}': expected PEM"),
        ({"RABBITMQ_TLS_CERT_FILE": "{cert}"}, "RABBITMQ_TLS_CERT_FILE (environment) is set without"),
        ({"RABBITMQ_TLS_KEY_FILE": "{key}"}, "RABBITMQ_TLS_KEY_FILE (environment) is set without"),
        (
            {"RABBITMQ_TLS_CERT_FILE": "{junk}", "RABBITMQ_TLS_KEY_FILE": "{key}"},
            "RABBITMQ_TLS_CERT_FILE (environment) / RABBITMQ_TLS_KEY_FILE (environment): {junk}: expected",
        ),
        (
            {"RABBITMQ_TLS_CERT_FILE": "{cert}", "RABBITMQ_TLS_KEY_FILE": "{ca}"},
            "{ca}: expected a PEM private key",
        ),
        (
            {"RABBITMQ_TLS_CERT_FILE": "{cert}", "RABBITMQ_TLS_KEY_FILE": "{other_key}"},
            "the key in {other_key} does not belong to the certificate in {cert}",
        ),
        ({"RABBITMQ_TLS_VERIFY_HOSTNAME": "maybe"}, "RABBITMQ_TLS_VERIFY_HOSTNAME (environment): 'maybe'"),
    ],
)
def test_bad_tls_settings_name_the_setting(
    pems: dict[str, str], environ: dict[str, str], expected: str
) -> None:
    """Each bad TLS setting stops start-up with one line naming the setting and what is wrong."""
    environ = {k: v.format(**pems) for k, v in environ.items()}
    assert expected.format(**pems) in _error({**AMQPS, **environ})


def test_tls_settings_without_an_amqps_broker_are_refused(pems: dict[str, str]) -> None:
    """TLS is turned on by an amqps:// URL only; a CA file with a plain broker is a mistake, said so."""
    message = _error({"RABBITMQ_TLS_CA_FILE": pems["ca"]})
    assert "RABBITMQ_TLS_CA_FILE (environment) is set but the broker is not amqps://" in message
    assert "not amqps://" in _error({"RABBITMQ_URL": "amqp://h/", "RABBITMQ_TLS_VERIFY_HOSTNAME": "false"})


def test_encrypted_client_key_is_refused(tmp_path: Path, pems: dict[str, str]) -> None:
    """A passphrase-protected key cannot be used unattended: refused at start, not prompted for."""
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        Encoding,
        PrivateFormat,
        load_pem_private_key,
    )

    key = load_pem_private_key(Path(pems["key"]).read_bytes(), password=None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pw")))
    message = _error({**AMQPS, "RABBITMQ_TLS_CERT_FILE": pems["cert"], "RABBITMQ_TLS_KEY_FILE": str(locked)})
    assert "the key is encrypted" in message


def test_password_file_gives_the_password_without_its_newline(tmp_path: Path) -> None:
    """RABBITMQ_PASS_FILE holds the password (a Docker or Kubernetes secret ends with a newline)."""
    secret = tmp_path / "pass"
    secret.write_text("s3cret pass\n")
    assert load_settings({}, {"RABBITMQ_PASS_FILE": str(secret)}, {}).broker.node.password == "s3cret pass"
    with_url = load_settings({"rabbitmq-pass-file": str(secret)}, {"RABBITMQ_URL": "amqps://app@h/"}, {})
    assert (with_url.broker.node.user, with_url.broker.node.password) == ("app", "s3cret pass")


def test_password_given_two_ways_is_refused(tmp_path: Path) -> None:
    """A password file with RABBITMQ_PASS, or with a URL that has a password, is ambiguous: refused."""
    secret = tmp_path / "pass"
    secret.write_text("from-file")
    message = _error({"RABBITMQ_PASS": "direct", "RABBITMQ_PASS_FILE": str(secret)})
    assert "RABBITMQ_PASS (environment) and RABBITMQ_PASS_FILE (environment) are both set" in message
    message = _error({"RABBITMQ_URL": "amqp://u:direct@h/"}, {"rabbitmq-pass-file": str(secret)})
    assert "--rabbitmq-pass-file and a password in RABBITMQ_URL are both set" in message
    assert "direct" not in message and "from-file" not in message


def test_token_from_the_environment_or_a_file(tmp_path: Path) -> None:
    """AUDITGEN_API_TOKEN, or AUDITGEN_API_TOKEN_FILE without its trailing newline; unset means none."""
    assert load_settings({}, {}, {}).api.token is None
    assert load_settings({}, {"AUDITGEN_API_TOKEN": "t0ken"}, {}).api.token == "t0ken"
    token_file = tmp_path / "token"
    token_file.write_text("f1le-t0ken\r\n")
    s = load_settings({}, {"AUDITGEN_API_TOKEN_FILE": str(token_file)}, {})
    assert s.api.token == "f1le-t0ken"
    assert "f1le-t0ken" not in repr(s)


@pytest.mark.parametrize(
    ("setting", "content", "expected"),
    [
        ("AUDITGEN_API_TOKEN_FILE", "\n", "the file is empty"),
        ("AUDITGEN_API_TOKEN_FILE", "two words\n", "without spaces"),
        ("RABBITMQ_PASS_FILE", "", "the file is empty"),
        ("RABBITMQ_PASS_FILE", "x" * 70_000, "larger than"),
    ],
)
def test_bad_secret_files_are_refused_without_showing_them(
    tmp_path: Path, setting: str, content: str, expected: str
) -> None:
    """An empty, oversized or malformed secret file stops start-up; the message never shows its content."""
    secret = tmp_path / "secret"
    secret.write_text(content)
    message = _error({setting: str(secret)})
    assert f"invalid {setting} (environment): '{secret}'" in message
    assert expected in message
    if content.strip():
        assert content.strip()[:10] not in message


def test_token_errors_never_show_the_token(tmp_path: Path) -> None:
    """A missing token file, a token with a space, or a token given twice: refused, the token never shown."""
    assert "expected a readable file" in _error({"AUDITGEN_API_TOKEN_FILE": str(tmp_path / "missing")})
    message = _error({"AUDITGEN_API_TOKEN": "secret token"})
    assert "invalid AUDITGEN_API_TOKEN (environment): '***'" in message
    assert "secret" not in message.replace("'***'", "")
    token_file = tmp_path / "token"
    token_file.write_text("t0ken")
    message = _error({"AUDITGEN_API_TOKEN": "t0ken"}, {"api-token-file": str(token_file)})
    assert "--api-token-file" in message and "AUDITGEN_API_TOKEN (environment)" in message
    assert "are both set" in message


def test_secrets_on_the_command_line_are_noted() -> None:
    """Secrets given as options are listed (for a start-up warning); the environment and files are not."""
    assert load_settings({}, {"RABBITMQ_PASS": "p", "AUDITGEN_API_TOKEN": "t"}, {}).secret_options == ()
    s = load_settings({"rabbitmq-pass": "p", "api-token": "t"}, {}, {})
    assert s.secret_options == ("--rabbitmq-pass", "--api-token")
    assert load_settings({"rabbitmq-url": "amqp://u@h/"}, {}, {}).secret_options == ()
    assert load_settings({"rabbitmq-url": "amqp://u:p@h/"}, {}, {}).secret_options == ("--rabbitmq-url",)


def test_bind_addresses_default_to_every_interface_and_take_ips_or_hostnames() -> None:
    """APP_HOST and PROMETHEUS_HOST: 0.0.0.0 as the legacy service; IPv4, IPv6 or a hostname."""
    s = load_settings({}, {}, {})
    assert (s.api.host, s.metrics.host) == ("0.0.0.0", "0.0.0.0")
    s = load_settings({"app-host": "127.0.0.1"}, {"PROMETHEUS_HOST": "::1"}, {})
    assert (s.api.host, s.metrics.host) == ("127.0.0.1", "::1")
    assert load_settings({}, {"APP_HOST": "api.internal-1.example"}, {}).api.host == "api.internal-1.example"


@pytest.mark.parametrize("bad", ["", "256.1.1.1.1", "[::1]", "host name", "-bad.example", "a..b", "x" * 64])
def test_bad_bind_addresses_are_refused(bad: str) -> None:
    """Anything but an IP address or a hostname is refused, naming the setting."""
    assert "invalid APP_HOST (environment)" in _error({"APP_HOST": bad})
