"""Agent identity: an Ed25519 key pair, named by a ``did:key``.

The did is ``did:key:z`` + base58btc(0xed 0x01 + the 32-byte public key), as the did:key method
specifies for Ed25519, so every such did starts with ``did:key:z6Mk`` and has exactly 56
characters (47 of base58 after the ``z``). A did of any other length, prefix or alphabet is
refused before anything is decoded, at the same cost whatever its length: a peer chooses the did
it signs with, and decoding base58 with big integers costs time quadratic in its length (a
400,000-character did once cost 28 s inside ``unseal``). A did that passes is decoded once and
its key cached (LRU, 8,192 entries): dids repeat, and decoding costs more than a lookup.

Private keys are saved as PKCS#8 PEM files (readable by ``openssl``), optionally encrypted with a
password, created with ``O_EXCL`` and mode 0600: ``save`` never overwrites a file, and ``load``
refuses one that group or others can access (as ``ssh`` does), saying how to fix it. Keys never
appear in ``repr`` or ``str``; ``fingerprint`` (16 hex digits of the public key's sha256) is a
short, stable name for display. ``Identity.verify(key, data, signature)`` returns a bool; a key
that is neither an Ed25519 did nor 32 bytes is an ``IdentityError``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from converge.core.clip import clip
from converge.errors import IdentityError

__all__ = ["Identity", "did_from_public_key", "public_key_from_did"]

_DID_PREFIX = "did:key:z"
_ED25519_MULTICODEC = b"\xed\x01"
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
# 0xed01 followed by 32 bytes lies between 58**46 and 58**47: always 47 base58 digits, the first
# three "6Mk" (the next one of e…w).
_DID_LENGTH = 56
_DID_SHAPE = re.compile(rf"did:key:z6Mk[{_B58}]{{44}}")


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        try:
            n = n * 58 + _B58_INDEX[ch]
        except KeyError:
            raise IdentityError(f"invalid base58 character {ch!r}") from None
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def did_from_public_key(public_key: bytes) -> str:
    """The ``did:key`` for a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise IdentityError(f"an Ed25519 public key has 32 bytes, not {len(public_key)}")
    return _DID_PREFIX + _b58encode(_ED25519_MULTICODEC + public_key)


def public_key_from_did(did: str) -> Ed25519PublicKey:
    """Parse an Ed25519 ``did:key`` into a public key.

    Its shape (length, prefix, alphabet) is checked first, in time that does not depend on how
    long ``did`` is; only then is it decoded (and the result cached: dids repeat).

    Raises:
        IdentityError: ``did`` is not an Ed25519 did:key.
    """
    if not isinstance(did, str):
        raise IdentityError(f"a did is a str, not {type(did).__name__}")
    if len(did) != _DID_LENGTH or not _DID_SHAPE.fullmatch(did):
        raise IdentityError(f"not an Ed25519 did:key: {clip(did)!r}")
    return _public_key(did)


@functools.lru_cache(maxsize=8192)
def _public_key(did: str) -> Ed25519PublicKey:
    raw = _b58decode(did[len(_DID_PREFIX) :])
    if len(raw) != 34 or raw[:2] != _ED25519_MULTICODEC:
        raise IdentityError(f"not an Ed25519 did:key: {did!r}")
    return Ed25519PublicKey.from_public_bytes(raw[2:])


class Identity:
    """An Ed25519 key pair (or only its public half) and the did that names it.

    Create one with ``generate()``, ``from_private_bytes()``, ``load()`` or, for a peer whose
    private key you do not hold, ``from_did()``.
    """

    __slots__ = ("_private", "_public", "_public_bytes", "did")

    def __init__(self, private: Ed25519PrivateKey | None, public: Ed25519PublicKey) -> None:
        self._private = private
        self._public = public
        self._public_bytes = public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.did: str = did_from_public_key(self._public_bytes)
        """The ``did:key:z6Mk…`` that names this identity."""

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def generate(cls) -> Identity:
        """A new random key pair."""
        key = Ed25519PrivateKey.generate()
        return cls(key, key.public_key())

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> Identity:
        """The key pair for a raw 32-byte Ed25519 private key (seed)."""
        if len(seed) != 32:
            raise IdentityError(f"an Ed25519 private key has 32 bytes, not {len(seed)}")
        key = Ed25519PrivateKey.from_private_bytes(seed)
        return cls(key, key.public_key())

    @classmethod
    def from_did(cls, did: str) -> Identity:
        """A public-only identity for a peer named by ``did``."""
        return cls(None, public_key_from_did(did))

    def public_only(self) -> Identity:
        """This identity without its private key (safe to hand to others)."""
        return Identity(None, self._public)

    # -- properties --------------------------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public_bytes

    @property
    def has_private_key(self) -> bool:
        """Whether this identity can sign."""
        return self._private is not None

    @property
    def fingerprint(self) -> str:
        """A short, stable name for display: the first 16 hex digits of sha256(public key)."""
        return hashlib.sha256(self._public_bytes).hexdigest()[:16]

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key. Handle with care: it is the identity."""
        if self._private is None:
            raise IdentityError(f"{self.did} is public-only: it has no private key")
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    # -- signatures --------------------------------------------------------------------------

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        if self._private is None:
            raise IdentityError(f"{self.did} is public-only: it cannot sign")
        return self._private.sign(data)

    @staticmethod
    def verify(
        key: str | bytes | Ed25519PublicKey | Identity, data: bytes, signature: bytes
    ) -> bool:
        """Whether ``signature`` is a valid signature of ``data`` by ``key``.

        Args:
            key: a did, a raw 32-byte public key, a public key object, or an ``Identity``.

        Raises:
            IdentityError: ``key`` is not a usable Ed25519 public key.
        """
        if isinstance(key, str):
            public = public_key_from_did(key)
        elif isinstance(key, Identity):
            public = key._public
        elif isinstance(key, bytes):
            if len(key) != 32:
                raise IdentityError(f"an Ed25519 public key has 32 bytes, not {len(key)}")
            public = Ed25519PublicKey.from_public_bytes(key)
        else:
            public = key
        try:
            public.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, password: bytes | None = None) -> Path:
        """Write the private key as PKCS#8 PEM, readable only by its owner (mode 0600).

        Refuses to overwrite an existing file.
        """
        if self._private is None:
            raise IdentityError(f"{self.did} is public-only: there is no private key to save")
        target = Path(path)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        pem = self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise IdentityError(f"{target} already exists; not overwriting a key file") from None
        except OSError as exc:
            raise IdentityError(f"cannot create key file {target}: {exc.strerror}") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, password: bytes | None = None) -> Identity:
        """Read a key file written by ``save()`` (or any PKCS#8 PEM Ed25519 key).

        Raises:
            IdentityError: the file is missing, readable by others, encrypted without a password,
                or not an Ed25519 private key.
        """
        source = Path(path)
        try:
            mode = source.stat().st_mode
            data = source.read_bytes()
        except OSError as exc:
            raise IdentityError(f"cannot read key file {source}: {exc.strerror}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentityError(
                f"key file {source} is accessible by others (mode {stat.S_IMODE(mode):04o}); "
                f"run: chmod 600 {source}"
            )
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except TypeError as exc:
            raise IdentityError(f"key file {source}: {exc}") from exc
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise IdentityError(f"key file {source} is not a readable private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"key file {source} holds a {type(key).__name__}, not Ed25519")
        return cls(key, key.public_key())

    # -- dunder ------------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other._public_bytes == self._public_bytes

    def __hash__(self) -> int:
        return hash(self._public_bytes)

    def __repr__(self) -> str:
        kind = "private" if self._private is not None else "public-only"
        return f"Identity({self.did!r}, {kind})"

    __str__ = __repr__
