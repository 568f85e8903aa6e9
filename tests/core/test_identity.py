"""Identity: Ed25519 keys named by did:key, signatures, and key files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core import Identity
from converge.core import identity as identity_module
from converge.core.identity import did_from_public_key, public_key_from_did
from converge.errors import IdentityError
from tests.strategies import odd_dids

# Written out here, independently of converge's encoder: the did:key rule for Ed25519 is
# "did:key:" + "z" (multibase base58btc) + base58btc(0xed 0x01 + raw public key).
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def reference_did(public_key: bytes) -> str:
    data = b"\xed\x01" + public_key
    n = int.from_bytes(data, "big")
    digits = ""
    while n:
        n, r = divmod(n, 58)
        digits = _B58[r] + digits
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "did:key:z" + "1" * zeros + digits


# The did:key spec's Ed25519 example, and RFC 8032 section 7.1 test 1 (secret key -> public key).
SPEC_EXAMPLE_PUBLIC = bytes.fromhex(
    "2e6fcce36701dc791488e0d0b1745cc1e33a4c1c9fcc41c63bd343dbbe0970e6"
)
SPEC_EXAMPLE_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


# -- did:key ---------------------------------------------------------------------------------------


def test_did_of_the_did_key_spec_example() -> None:
    assert reference_did(SPEC_EXAMPLE_PUBLIC) == SPEC_EXAMPLE_DID
    assert did_from_public_key(SPEC_EXAMPLE_PUBLIC) == SPEC_EXAMPLE_DID
    parsed = public_key_from_did(SPEC_EXAMPLE_DID)
    assert parsed.public_bytes_raw() == SPEC_EXAMPLE_PUBLIC


def test_rfc8032_secret_key_gives_its_public_key_and_did() -> None:
    ident = Identity.from_private_bytes(RFC8032_SECRET)
    assert ident.public_key == RFC8032_PUBLIC
    assert ident.did == reference_did(RFC8032_PUBLIC)
    assert ident.did.startswith("did:key:z6Mk")


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32))
def test_did_round_trips_through_public_key(seed: bytes) -> None:
    ident = Identity.from_private_bytes(seed)
    assert ident.did == reference_did(ident.public_key)
    assert ident.did.startswith("did:key:z6Mk")
    assert public_key_from_did(ident.did).public_bytes_raw() == ident.public_key
    assert Identity.from_did(ident.did) == ident
    assert len(ident.did) == 56


@pytest.mark.parametrize("key", [b"\x00" * 32, b"\xff" * 32], ids=["lowest", "highest"])
def test_every_ed25519_did_has_56_characters(key: bytes) -> None:
    # 0xed01 + 32 bytes always takes 47 base58 digits: the extremes have the same length.
    did = did_from_public_key(key)
    assert did == reference_did(key)
    assert len(did) == 56
    assert public_key_from_did(did).public_bytes_raw() == key


class DecodeCounter:
    """Stands in for the base58 decoder and counts the calls; refuses to decode anything long,
    so a check that comes too late fails at once rather than spending seconds."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.calls = 0

    def __call__(self, text: str) -> bytes:
        self.calls += 1
        assert len(text) == 47, f"decoded {len(text)} characters of base58"
        return self.real(text)  # type: ignore[operator,no-any-return]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> DecodeCounter:
    counter = DecodeCounter(identity_module._b58decode)
    monkeypatch.setattr(identity_module, "_b58decode", counter)
    return counter


@pytest.mark.parametrize(
    "did",
    [
        "did:key:z6Mk" + "x" * 400_000,
        "did:key:z" + "1" * 100_000,
        SPEC_EXAMPLE_DID + "1",
        SPEC_EXAMPLE_DID[:-1],
        SPEC_EXAMPLE_DID[:-1] + "0",  # the right length, not base58
        "did:key:zQ3s" + SPEC_EXAMPLE_DID[12:],  # the right length, not Ed25519's prefix
    ],
    ids=["400k", "100k-ones", "one-longer", "one-shorter", "not-base58", "other-key-type"],
)
def test_a_did_of_another_shape_is_refused_without_decoding_it(
    did: str, decodes: DecodeCounter
) -> None:
    with pytest.raises(IdentityError) as info:
        public_key_from_did(did)
    assert decodes.calls == 0
    assert len(str(info.value)) < 200  # the did is clipped in the message, not copied


@settings(max_examples=150)
@given(odd_dids)
def test_only_a_did_of_the_ed25519_shape_is_ever_decoded(did: str) -> None:
    counter = DecodeCounter(identity_module._b58decode)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(identity_module, "_b58decode", counter)
        try:
            key = public_key_from_did(did)
        except IdentityError as exc:
            assert len(str(exc)) < 200
        else:
            assert did_from_public_key(key.public_bytes_raw()) == did
    if not (len(did) == 56 and did.startswith("did:key:z6Mk")):
        assert counter.calls == 0


@pytest.mark.parametrize(
    "did",
    [
        "",
        "did:web:example.com",
        "did:key:",
        "did:key:z",
        "did:key:z0OIl",  # not base58
        "did:key:zzzz",  # base58, wrong length
        # A secp256k1 did:key (multicodec 0xe7 0x01), which is not Ed25519.
        "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
        SPEC_EXAMPLE_DID[:-1],
        SPEC_EXAMPLE_DID + "1",
    ],
)
def test_malformed_did_is_an_identity_error(did: str) -> None:
    with pytest.raises(IdentityError):
        public_key_from_did(did)
    with pytest.raises(IdentityError):
        Identity.from_did(did)


def test_public_key_of_wrong_length_is_refused() -> None:
    with pytest.raises(IdentityError, match="32 bytes"):
        did_from_public_key(b"\x01" * 31)
    with pytest.raises(IdentityError, match="32 bytes"):
        Identity.from_private_bytes(b"\x01" * 33)


# -- keys and signatures ---------------------------------------------------------------------------


def test_generate_gives_distinct_identities_that_sign_and_verify() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert a != b
    assert a.did != b.did
    assert a.has_private_key
    sig = a.sign(b"hello")
    assert len(sig) == 64
    assert Identity.verify(a.did, b"hello", sig)
    assert not Identity.verify(a.did, b"hellO", sig)
    assert not Identity.verify(b.did, b"hello", sig)


def test_from_private_bytes_is_deterministic() -> None:
    seed = bytes(range(32))
    a, b = Identity.from_private_bytes(seed), Identity.from_private_bytes(seed)
    assert a == b
    assert a.did == b.did
    assert a.fingerprint == b.fingerprint
    assert a.private_bytes() == seed
    # Ed25519 signatures are deterministic too.
    assert a.sign(b"x") == b.sign(b"x")
    assert hash(a) == hash(b)


def test_fingerprint_is_16_hex_digits_and_differs_between_keys() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert len(a.fingerprint) == 16
    int(a.fingerprint, 16)
    assert a.fingerprint != b.fingerprint


def test_verify_accepts_did_raw_bytes_key_object_and_identity() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"payload")
    public_obj = Ed25519PrivateKey.from_private_bytes(ident.private_bytes()).public_key()
    for key in (ident.did, ident.public_key, public_obj, ident, ident.public_only()):
        assert Identity.verify(key, b"payload", sig) is True
        assert Identity.verify(key, b"payloaD", sig) is False
        assert Identity.verify(key, b"payload", sig[:-1] + bytes([sig[-1] ^ 1])) is False


def test_verify_with_unusable_key_is_an_identity_error() -> None:
    sig = Identity.generate().sign(b"x")
    with pytest.raises(IdentityError):
        Identity.verify(b"\x00" * 31, b"x", sig)
    with pytest.raises(IdentityError):
        Identity.verify("did:web:example.com", b"x", sig)


def test_public_only_cannot_sign_or_reveal_a_private_key() -> None:
    ident = Identity.generate()
    pub = ident.public_only()
    assert pub == ident
    assert pub.did == ident.did
    assert not pub.has_private_key
    with pytest.raises(IdentityError, match="public-only"):
        pub.sign(b"x")
    with pytest.raises(IdentityError):
        pub.private_bytes()
    # It still verifies what the full identity signed.
    assert Identity.verify(pub, b"x", ident.sign(b"x"))
    assert not Identity.from_did(ident.did).has_private_key


def test_repr_and_str_never_show_private_key_material(tmp_path: Path) -> None:
    ident = Identity.generate()
    secret = ident.private_bytes()
    path = ident.save(tmp_path / "k.pem")
    pem_body = "".join(
        line for line in path.read_text().splitlines() if line and not line.startswith("-----")
    )
    der = base64.b64decode(pem_body)
    forms = {
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        pem_body,
        der.hex(),
        repr(secret),
    }
    for text in (repr(ident), str(ident), f"{ident}", f"{ident!r}"):
        assert ident.did in text
        for form in forms:
            assert form not in text
    assert "public-only" in repr(ident.public_only())


# -- key files -------------------------------------------------------------------------------------


def test_save_writes_mode_0600_and_load_round_trips(tmp_path: Path) -> None:
    ident = Identity.generate()
    path = ident.save(tmp_path / "agent.pem")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = Identity.load(path)
    assert loaded == ident
    assert loaded.private_bytes() == ident.private_bytes()
    assert Identity.verify(ident.did, b"m", loaded.sign(b"m"))


def test_save_mode_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = Identity.generate().save(tmp_path / "k.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    first = Identity.generate()
    first.save(path)
    before = path.read_bytes()
    with pytest.raises(IdentityError, match="already exists"):
        Identity.generate().save(path)
    assert path.read_bytes() == before
    assert Identity.load(path) == first


def test_public_only_identity_cannot_be_saved(tmp_path: Path) -> None:
    with pytest.raises(IdentityError):
        Identity.generate().public_only().save(tmp_path / "k.pem")
    assert not (tmp_path / "k.pem").exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o602, 0o610])
def test_load_refuses_a_key_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = Identity.generate().save(tmp_path / "k.pem")
    os.chmod(path, mode)
    with pytest.raises(IdentityError, match="chmod 600"):
        Identity.load(path)


def test_load_of_missing_file_is_an_identity_error(tmp_path: Path) -> None:
    with pytest.raises(IdentityError):
        Identity.load(tmp_path / "absent.pem")


def test_password_protected_key_round_trips(tmp_path: Path) -> None:
    ident = Identity.generate()
    path = ident.save(tmp_path / "k.pem", password=b"s3cret")
    assert b"ENCRYPTED" in path.read_bytes()
    assert Identity.load(path, password=b"s3cret") == ident


@pytest.mark.parametrize("password", [None, b"wrong"])
def test_encrypted_key_with_wrong_or_missing_password_is_refused(
    tmp_path: Path, password: bytes | None
) -> None:
    path = Identity.generate().save(tmp_path / "k.pem", password=b"s3cret")
    with pytest.raises(IdentityError):
        Identity.load(path, password=password)


def test_password_for_an_unencrypted_key_is_refused(tmp_path: Path) -> None:
    path = Identity.generate().save(tmp_path / "k.pem")
    with pytest.raises(IdentityError):
        Identity.load(path, password=b"unexpected")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def test_load_refuses_a_non_ed25519_key(tmp_path: Path) -> None:
    ec = generate_private_key(SECP256R1())
    pem = ec.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "ec.pem"
    _write_private(path, pem)
    with pytest.raises(IdentityError, match="not Ed25519"):
        Identity.load(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_load_refuses_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.pem"
    _write_private(path, content)
    with pytest.raises(IdentityError):
        Identity.load(path)
