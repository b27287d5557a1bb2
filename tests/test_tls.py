"""TLS 1.3 only, both where it can be terminated (issue 6, item 6):

* the service itself (``SANKOFA_TLS_CERTFILE`` / ``SANKOFA_TLS_KEYFILE``,
  ``sankofa.tls``): a real ``sankofa serve`` on a free loopback port, one
  process, and again with a critical lane (the supervisor's workers);
* nginx with the shipped deploy/nginx/nginx.conf, adapted to loopback, in front
  of a real ``sankofa serve``.

Each time a TLS 1.3 client completes the handshake and gets real answers
(``/health/live`` 200, a transaction scored and stored), and a client that
offers TLS 1.2 at most fails in the handshake. The certificate is made here:
self-signed, for localhost and 127.0.0.1.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from conftest import LiveServer, free_port, server_env
from deploy_tools import DEPLOY, find_tool, local_conf, nginx_command, run, wait_for
from sankofa.settings import Settings
from sankofa.tls import MINIMUM_TLS_VERSION
from tests_support import tx


@dataclass(frozen=True)
class Certs:
    cert: Path
    key: Path


def _self_signed(d: Path) -> Certs:
    """A P-256 certificate for localhost and 127.0.0.1, valid for a day: with the
    ``cryptography`` package when installed, else the openssl command."""
    certs = Certs(d / "tls.crt", d / "tls.key")
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = find_tool("openssl")
        if openssl is None:
            pytest.skip("neither the cryptography package nor openssl is installed")
        result = run(
            [
                openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-days", "1", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout", str(certs.key), "-out", str(certs.cert),
            ]
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return certs
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certs.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certs.key.chmod(0o600)
    return certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return _self_signed(tmp_path_factory.mktemp("certs"))


def tls13_client(certs: Certs) -> ssl.SSLContext:
    """A client that trusts the test certificate and speaks TLS 1.3 or nothing."""
    ctx = ssl.create_default_context(cafile=str(certs.cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def tls12_client(certs: Certs) -> ssl.SSLContext:
    """A client that trusts the test certificate but offers at most TLS 1.2."""
    ctx = ssl.create_default_context(cafile=str(certs.cert))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def handshake(port: int, ctx: ssl.SSLContext) -> str | None:
    """The protocol version the handshake settled on."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        return s.version()


def check_tls13_only(base_url: str, port: int, certs: Certs) -> None:
    assert handshake(port, tls13_client(certs)) == "TLSv1.3"
    with httpx.Client(base_url=base_url, verify=tls13_client(certs), timeout=10) as client:
        r = client.get("/health/live")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ok"}
    # A client offering both settles on 1.3; one offering 1.2 at most fails in
    # the handshake (nginx sends a protocol_version alert; uvicorn, on asyncio's
    # TLS, closes the connection).
    default = ssl.create_default_context(cafile=str(certs.cert))
    assert default.minimum_version <= ssl.TLSVersion.TLSv1_2
    assert handshake(port, default) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake(port, tls12_client(certs))
    with (
        pytest.raises(httpx.ConnectError),
        httpx.Client(base_url=base_url, verify=tls12_client(certs), timeout=10) as client,
    ):
        client.get("/health/live")


def score_one(base_url: str, certs: Certs, i: int, **headers: str) -> dict[str, object]:
    with httpx.Client(base_url=base_url, verify=tls13_client(certs), timeout=30) as client:
        r = client.post("/v1/transactions", json=tx(i), headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def stored_ids(database_url: str) -> set[str]:
    import asyncio

    async def fetch() -> set[str]:
        conn = await asyncpg.connect(database_url)
        try:
            return {r[0] for r in await conn.fetch("SELECT transaction_id FROM transactions")}
        finally:
            await conn.close()

    return asyncio.run(fetch())


class TLSServer:
    """``sankofa serve`` with TLS, on free loopback ports; ready once /health/ready
    answers 200 over TLS 1.3 on each of them."""

    def __init__(self, env: dict[str, str], log_path: Path, certs: Certs, *args: str) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_path
        self.certs = certs
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ports: list[int], timeout_s: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sankofa.cli",
                    "serve",
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        ctx = tls13_client(self.certs)
        deadline = time.monotonic() + timeout_s
        waiting = set(ports)
        while waiting:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not ready in {timeout_s}s: {self.log_path.read_text()[-3000:]}"
                )
            for port in list(waiting):
                try:
                    url = f"https://127.0.0.1:{port}/health/ready"
                    if httpx.get(url, verify=ctx, timeout=1.0).status_code == 200:
                        waiting.discard(port)
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def tls_env(settings: Settings, certs: Certs) -> dict[str, str]:
    return server_env(
        settings, SANKOFA_TLS_CERTFILE=str(certs.cert), SANKOFA_TLS_KEYFILE=str(certs.key)
    )


# -- the service itself ---------------------------------------------------------------


def test_the_service_serves_tls_1_3_only(
    settings: Settings, certs: Certs, tmp_path: Path, database_url: str
) -> None:
    server = TLSServer(tls_env(settings, certs), tmp_path / "server.log", certs)
    server.start([server.port])
    try:
        check_tls13_only(server.url, server.port, certs)
        decision = score_one(server.url, certs, 1)
        assert decision["transaction_id"] == "tx-1"
        # Plain HTTP to the TLS port gets no answer from the application.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/health/live", timeout=5)
    finally:
        server.stop()
    assert stored_ids(database_url) == {"tx-1"}


def test_every_worker_serves_tls_1_3_only(
    settings: Settings, certs: Certs, tmp_path: Path, database_url: str
) -> None:
    """The supervisor's path: a main worker and the critical lane's, each TLS 1.3 only."""
    lane = free_port()
    server = TLSServer(
        tls_env(settings, certs), tmp_path / "server.log", certs, "--critical-port", str(lane)
    )
    server.start([server.port, lane])
    try:
        for port in (server.port, lane):
            check_tls13_only(f"https://127.0.0.1:{port}", port, certs)
        score_one(server.url, certs, 1)
        score_one(f"https://127.0.0.1:{lane}", certs, 2, **{"X-Priority": "critical"})
    finally:
        server.stop()
    assert stored_ids(database_url) == {"tx-1", "tx-2"}


def test_the_floor_is_tls_1_3() -> None:
    from sankofa.tls import restrict

    ctx = restrict(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert ctx.minimum_version is MINIMUM_TLS_VERSION is ssl.TLSVersion.TLSv1_3


def test_tls_settings_come_in_pairs_of_real_files(certs: Certs, tmp_path: Path) -> None:
    from pydantic import ValidationError

    Settings(tls_certfile=certs.cert, tls_keyfile=certs.key)
    with pytest.raises(ValidationError, match="set together"):
        Settings(tls_certfile=certs.cert)
    with pytest.raises(ValidationError, match="set together"):
        Settings(tls_keyfile=certs.key)
    with pytest.raises(ValidationError, match="SANKOFA_TLS_KEYFILE is not a readable file"):
        Settings(tls_certfile=certs.cert, tls_keyfile=tmp_path / "missing.key")


# -- nginx in front of the real service -----------------------------------------------


@dataclass
class Proxy:
    url: str
    port: int


@pytest.fixture
def nginx_in_front(live_server: LiveServer, certs: Certs, tmp_path: Path) -> Iterator[Proxy]:
    nginx = find_tool("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed (Debian package nginx)")
    # Every instance of the shipped file, main port and critical lane, is the one
    # real service here.
    upstreams = {f"sankofa-{i}:{p}": live_server.port for i in range(1, 5) for p in (8000, 8001)}
    http_port, https_port = free_port(), free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        local_conf(
            (DEPLOY / "nginx" / "nginx.conf").read_text(),
            certs=certs.cert.parent,
            work=tmp_path,
            upstreams=upstreams,
            http_port=http_port,
            https_port=https_port,
        )
    )
    with (tmp_path / "nginx.out").open("wb") as out, (tmp_path / "nginx.err").open("wb") as err:
        proc = subprocess.Popen(
            nginx_command(nginx, tmp_path, conf, "-g", "daemon off;"), stdout=out, stderr=err
        )
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited: {(tmp_path / 'nginx.err').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", https_port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout_s=10, what="nginx to listen")
        yield Proxy(url=f"https://127.0.0.1:{https_port}", port=https_port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_nginx_terminates_tls_1_3_only_in_front_of_the_service(
    nginx_in_front: Proxy, certs: Certs, database_url: str
) -> None:
    check_tls13_only(nginx_in_front.url, nginx_in_front.port, certs)
    score_one(nginx_in_front.url, certs, 1)
    score_one(nginx_in_front.url, certs, 2, **{"X-Priority": "critical"})
    assert stored_ids(database_url) == {"tx-1", "tx-2"}
