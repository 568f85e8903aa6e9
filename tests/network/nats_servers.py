"""NATS for the tests: the shared server's URL, and servers of a test's own.

``nats_url()`` is ``CONVERGE_TEST_NATS_URL``; without it a NATS test is skipped with the
reason, unless ``CONVERGE_REQUIRE_SERVICES=1`` (CI sets it): then it fails. Tests that restart
a server or need token auth never touch the shared one: ``NatsServer`` runs a ``nats-server``
of their own on a free 127.0.0.1 port, with its own JetStream directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from pathlib import Path

import pytest

__all__ = ["NatsServer", "nats_url", "self_signed", "unique_prefix"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CONVERGE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (CONVERGE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def nats_url() -> str:
    """The shared NATS server's URL (skips, or fails under CONVERGE_REQUIRE_SERVICES=1)."""
    url = os.environ.get("CONVERGE_TEST_NATS_URL")
    if not url:
        _unavailable("CONVERGE_TEST_NATS_URL is not set: no NATS server to test against")
    assert url is not None
    return url


def unique_prefix() -> str:
    """A subject prefix no other test uses: its subjects and interest never meet theirs."""
    return f"cvtest.{uuid.uuid4().hex}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for ``127.0.0.1`` signed by itself, and its key, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class NatsServer:
    """A ``nats-server`` of one test: ``start()``, ``stop()``, ``start()`` again on the same
    port and store (a restart)."""

    def __init__(
        self, store: Path, *, token: str | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            _unavailable("no nats-server binary on PATH")
        assert binary is not None
        self.binary = binary
        self.port = _free_port()
        self.store = store
        self.token = token
        self.tls = tls  # (certificate, key) PEM files: the server requires TLS
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        if self.token is not None:
            args += ["--auth", self.token]
        if self.tls is not None:
            args += ["--tls", "--tlscert", str(self.tls[0]), "--tlskey", str(self.tls[1])]
        self._process = process = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    if process.returncode is not None:
                        raise RuntimeError(f"nats-server exited: {process.returncode}") from None
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
