"""rediss:// against a real TLS-enabled redis-server, with certificates made here."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mita_redis_mcp.app import App
from mita_redis_mcp.config import Settings
from mita_redis_mcp.errors import ConfigError
from tests.conftest import call_tool, error_text, installed
from tests.servers import ServerProcess, free_port, redis_binary, start_server

pytestmark = pytest.mark.anyio


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(name: str, cwd: Path, ca: str = "ca") -> None:
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-subj",
        f"/CN={name}",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-out",
        f"{name}.csr",
        cwd=cwd,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-copy_extensions",
        "copy",
        "-out",
        f"{name}.pem",
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    cwd = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{ca}.key",
            "-subj",
            f"/CN={ca}",
            "-days",
            "2",
            "-out",
            f"{ca}.pem",
            cwd=cwd,
        )
    _issue("server", cwd)
    _issue("client", cwd)
    return Pki(
        cwd / "ca.pem",
        cwd / "server.pem",
        cwd / "server.key",
        cwd / "client.pem",
        cwd / "client.key",
        cwd / "other-ca.pem",
    )


@dataclass
class TlsServer:
    plain: ServerProcess
    tls_port: int

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0"


def _start_tls(pki: Pki, *, mutual: bool) -> Iterator[TlsServer]:
    binary = installed(redis_binary())
    tls_port = free_port()
    # The plain port stays open for the suite's readiness probe and for seeding.
    server = start_server(
        binary,
        *("--tls-port", str(tls_port), "--tls-cert-file", str(pki.server_cert)),
        *("--tls-key-file", str(pki.server_key), "--tls-ca-cert-file", str(pki.ca)),
        *("--tls-auth-clients", "yes" if mutual else "no"),
    )
    try:
        with server.client() as raw:
            raw.set("app:tls", "over TLS")
        yield TlsServer(server, tls_port)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[TlsServer]:
    yield from _start_tls(pki, mutual=False)


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[TlsServer]:
    yield from _start_tls(pki, mutual=True)


def _app(url: str, **tls: object) -> App:
    settings = Settings.load({"redis_url": url, "prefixes": ["app:"], **tls}, environ={})
    return App.from_settings(settings)


async def test_rediss_with_custom_ca_verifies_and_reads(tls_server: TlsServer, pki: Pki) -> None:
    result = await call_tool(
        _app(tls_server.url, tls_ca_file=str(pki.ca)), "get", {"key": "app:tls"}
    )
    assert result.structured_content is not None
    assert result.structured_content["value"]["value"] == "over TLS"


async def test_rediss_refuses_a_server_signed_by_another_ca(
    tls_server: TlsServer, pki: Pki
) -> None:
    app = _app(tls_server.url, tls_ca_file=str(pki.other_ca))
    text = error_text(await call_tool(app, "get", {"key": "app:tls"}))
    assert "TLS" in text
    assert str(tls_server.tls_port) not in text


async def test_insecure_skip_verify_accepts_any_certificate(tls_server: TlsServer) -> None:
    app = _app(tls_server.url, tls_insecure_skip_verify=True)
    result = await call_tool(app, "get", {"key": "app:tls"})
    assert not result.is_error


async def test_mutual_tls_with_client_certificate(mtls_server: TlsServer, pki: Pki) -> None:
    app = _app(
        mtls_server.url,
        tls_ca_file=str(pki.ca),
        tls_cert_file=str(pki.client_cert),
        tls_key_file=str(pki.client_key),
    )
    result = await call_tool(app, "get", {"key": "app:tls"})
    assert not result.is_error


async def test_mutual_tls_without_client_certificate_is_refused(
    mtls_server: TlsServer, pki: Pki
) -> None:
    app = _app(mtls_server.url, tls_ca_file=str(pki.ca))
    assert "cannot reach Redis" in error_text(await call_tool(app, "get", {"key": "app:tls"}))


def test_tls_options_need_a_rediss_url(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="not a rediss:// URL"):
        Settings.load(
            {"redis_url": "redis://127.0.0.1:1/0", "tls_ca_file": str(pki.ca)}, environ={}
        )


def test_rediss_url_password_is_masked_in_safe_url() -> None:
    settings = Settings.load({"redis_url": "rediss://:hunter2@127.0.0.1:1/0"}, environ={})
    assert "hunter2" not in settings.safe_url
    assert settings.safe_url == "rediss://:***@127.0.0.1:1/0"
