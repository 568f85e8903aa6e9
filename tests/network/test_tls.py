"""TLS on the socket transports, server-side and mutual, with CAs made here."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from converge.core import Identity, Message
from converge.errors import TransportError, ValidationError
from converge.network import Inbox, StaticResolver
from converge.network.socket_network import SocketNetwork
from converge.network.tcp import tcp_network
from converge.network.tls import TlsConfig
from converge.network.websocket import websocket_network
from tests.network.transport_conformance import received

ALICE, BOB = Identity.generate(), Identity.generate()
HOSTS = [f"127.0.0.{i}" for i in (1, 2, 3)]

Opener = Callable[..., Awaitable[SocketNetwork]]


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class _CA:
    """A self-signed CA that issues certificates for the loopback "hosts"."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cafile = directory / f"{name}.pem"
        self.cafile.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common: str, hosts: list[str]) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(h)) for h in hosts]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        certfile = self.directory / f"{self.name}-{common}.pem"
        keyfile = self.directory / f"{self.name}-{common}.key"
        certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        keyfile.write_bytes(_pem(key))
        return certfile, keyfile


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsConfig]:
    """Configs: ``server`` (server-side TLS), ``mutual``, ``rogue`` (mutual, another CA),
    ``wrong_host`` (a certificate for another address)."""
    directory = tmp_path_factory.mktemp("pki")
    ca, rogue = _CA(directory, "ca"), _CA(directory, "rogue")
    cert, key = ca.issue("peer", HOSTS)
    other_cert, other_key = ca.issue("elsewhere", ["127.0.0.9"])
    rogue_cert, rogue_key = rogue.issue("peer", HOSTS)
    return {
        "server": TlsConfig(str(cert), str(key), cafile=str(ca.cafile)),
        "mutual": TlsConfig(str(cert), str(key), cafile=str(ca.cafile), mutual=True),
        "rogue": TlsConfig(str(rogue_cert), str(rogue_key), cafile=str(ca.cafile), mutual=True),
        "wrong_host": TlsConfig(str(other_cert), str(other_key), cafile=str(ca.cafile)),
    }


@pytest.fixture(params=["tcp", "ws"])
def opener(request: pytest.FixtureRequest) -> Opener:
    return tcp_network if request.param == "tcp" else websocket_network


async def _pair(
    opener: Opener, sender_tls: TlsConfig | None, receiver_tls: TlsConfig
) -> tuple[StaticResolver, SocketNetwork, SocketNetwork, Inbox]:
    resolver = StaticResolver()
    sender = await opener(resolver, host="127.0.0.2", tls=sender_tls)
    receiver = await opener(resolver, host="127.0.0.3", tls=receiver_tls)
    inbox = Inbox()
    receiver.register(BOB.did, inbox)
    receiver.subscribe(BOB.did, "feed")
    resolver.add(BOB.did, receiver.endpoint)
    return resolver, sender, receiver, inbox


@pytest.mark.parametrize("mode", ["server", "mutual"])
async def test_messages_cross_tls_and_endpoints_say_so(
    opener: Opener, pki: dict[str, TlsConfig], mode: str
) -> None:
    _, sender, receiver, inbox = await _pair(opener, pki[mode], pki[mode])
    try:
        assert receiver.endpoint.scheme == ("tls" if opener is tcp_network else "wss")
        direct = Message(kind="note", payload=1, recipient=BOB.did).sign(ALICE)
        published = Message(kind="note", payload=2, topic="feed").sign(ALICE)
        assert await sender.send(direct) == 1
        assert await sender.send(published) == 1
        assert await received(inbox, 2) == [direct, published]
    finally:
        await sender.aclose()
        await receiver.aclose()


@pytest.mark.parametrize(
    ("sender_mode", "receiver_mode"),
    [
        (None, "server"),  # the system's CAs do not know ours
        ("server", "mutual"),  # no client certificate
        ("rogue", "mutual"),  # a client certificate from another CA
        ("mutual", "wrong_host"),  # the listener's certificate names another address
    ],
)
async def test_a_peer_tls_does_not_trust_delivers_nothing(
    opener: Opener,
    pki: dict[str, TlsConfig],
    sender_mode: str | None,
    receiver_mode: str,
) -> None:
    sender_tls = None if sender_mode is None else pki[sender_mode]
    _, sender, receiver, inbox = await _pair(opener, sender_tls, pki[receiver_mode])
    try:
        with pytest.raises(TransportError):
            await sender.send(Message(kind="note", recipient=BOB.did).sign(ALICE))
        assert len(inbox) == 0
    finally:
        await sender.aclose()
        await receiver.aclose()


def test_a_tls_config_names_what_is_wrong(tmp_path: Path, pki: dict[str, TlsConfig]) -> None:
    with pytest.raises(ValidationError) as missing:
        TlsConfig(str(tmp_path / "nope.pem"))
    assert missing.value.field == "certfile"
    with pytest.raises(ValidationError) as no_ca:
        TlsConfig(pki["server"].certfile, pki["server"].keyfile, mutual=True)
    assert no_ca.value.field == "cafile"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValidationError) as bad:
        TlsConfig(str(garbage)).server_context()
    assert bad.value.field == "certfile"
