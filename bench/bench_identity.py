"""Ed25519 sign+verify of a ``Message`` through converge against raw ``cryptography``.

One operation is what a sender and a receiver each do to one message: converge's is
``msg.sign(identity)`` then ``.verify()``; raw's is ``Ed25519PrivateKey.sign`` then
``Ed25519PublicKey.verify`` on the same bytes (the signed message's canonical body). The two run
in alternating rounds and the best round of each counts, so machine noise hits both alike.
Target (issue 2): converge reaches >= 90% of raw throughput.

The sealed wire path (``sign`` + ``seal()`` on the sender, ``unseal(bytes, Message)`` on the
receiver) is reported beside them, for information.

Run: ``.venv/bin/python bench/bench_identity.py``
"""

from __future__ import annotations

import argparse

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from _common import emit, interleaved, rate
from converge.core import Identity, Message, new_id, unseal
from converge.core.signing import Signed

BENCH = "identity"
TARGET_RATIO = 0.90


def make_message(sender: Identity, recipient: Identity) -> Message:
    """An unsigned message as an agent would build it before ``sign()`` fills in the sender."""
    return Message(
        kind="offer",
        payload={"intent_id": new_id(), "cost": 0.42, "currency": "USD", "latency_s": 1.5},
        recipient=recipient.did,
        trace_id=new_id(),
        parent_id=new_id(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=9, help="rounds of each contender")
    args = parser.parse_args()
    n: int = args.ops

    alice, bob = Identity.generate(), Identity.generate()
    msg = make_message(alice, bob)
    signed = msg.sign(alice)
    signed.verify()
    body = signed.body()  # exactly the bytes converge signs and verifies for this message
    assert alice.sign(body) == signed.signature  # Ed25519 is deterministic: same bytes, same sig

    private = Ed25519PrivateKey.from_private_bytes(alice.private_bytes())
    public = private.public_key()

    def raw() -> None:
        sign, verify = private.sign, public.verify
        for _ in range(n):
            verify(sign(body), body)

    def converge() -> None:
        for _ in range(n):
            msg.sign(alice).verify()

    def sealed() -> None:
        for _ in range(n):
            unseal(msg.sign(alice).seal(), Message)

    def encoding_only() -> None:
        # What converge adds around the crypto: building the body twice (sign and verify), two
        # struct copies, the did → key lookup. Signing and verifying replaced by no-ops.
        for _ in range(n):
            Signed.body(msg)
            Signed.body(signed)

    interleaved({"raw": raw, "converge": converge, "sealed": sealed}, rounds=1)  # warm-up
    best = interleaved(
        {"raw": raw, "converge": converge, "sealed": sealed, "bodies": encoding_only},
        rounds=args.rounds,
    )

    raw_ops = rate(n, best["raw"])
    converge_ops = rate(n, best["converge"])
    sealed_ops = rate(n, best["sealed"])
    common = {"ops_per_round": n, "rounds": args.rounds, "message_body_bytes": len(body)}
    emit(bench=BENCH, case="raw_cryptography_sign_verify", value=raw_ops, unit="ops/s", **common)
    emit(bench=BENCH, case="converge_sign_verify", value=converge_ops, unit="ops/s", **common)
    emit(
        bench=BENCH,
        case="converge_vs_raw_ratio",
        value=round(converge_ops / raw_ops, 3),
        unit="ratio",
        target=TARGET_RATIO,
        overhead_us_per_op=round((best["converge"] - best["raw"]) / n * 1e6, 2),
        **common,
    )
    emit(
        bench=BENCH,
        case="converge_sign_seal_unseal",
        value=sealed_ops,
        unit="ops/s",
        ratio_to_raw=round(sealed_ops / raw_ops, 3),
        informational=True,
        **common,
    )
    emit(
        bench=BENCH,
        case="canonical_body_x2",
        value=round(best["bodies"] / n * 1e6, 2),
        unit="us/op",
        note="two Signed.body() calls per op (sign and verify each build one), no crypto",
        informational=True,
        **common,
    )


if __name__ == "__main__":
    main()
