"""``Message`` encode+decode round trips through converge's codec, against raw msgspec.

One round trip is ``from_msgpack(to_msgpack(msg), Message)`` — what a transport or a store does
to every message it carries. Raw msgspec (a module-level ``Encoder`` and a ``Decoder(Message)``)
runs on the same message in alternating rounds, so the ratio is fair on a noisy machine.

Two messages, because the absolute rate depends mostly on the message's size:

- ``compact``: a direct chat message (recipient did, trace id, a one-key payload, the automatic
  id, timestamp and nonce, no signature) — the shape of the issue's reference figure, where raw
  msgspec does about 1.3M round trips/s. Target (issue 2): >= 700,000 round trips/s.
- ``signed``: a signed offer-sized message (sender and recipient dids, 64-byte signature, a
  four-key payload, trace and parent ids), 480 bytes. Informational: raw msgspec itself does about
  0.65 to 0.8M/s on it here, so the figure that matters is the ratio to raw.

JSON round trips (``to_json`` / ``from_json``) are reported for information.

Run: ``.venv/bin/python bench/bench_codec.py``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import msgspec

from _common import emit, interleaved, rate
from converge.core import Identity, Message, new_id
from converge.protocol import from_json, from_msgpack, to_json, to_msgpack

BENCH = "codec"
TARGET = 700_000


def compact_message() -> Message:
    """A direct chat message, unsigned."""
    return Message(
        kind="chat",
        payload={"text": "hello"},
        recipient=Identity.generate().did,
        trace_id=new_id(),
    )


def signed_message() -> Message:
    """A signed direct message of the size agents exchange in a contract-net round."""
    alice, bob = Identity.generate(), Identity.generate()
    msg = Message(
        kind="offer",
        payload={"intent_id": new_id(), "cost": 0.42, "currency": "USD", "latency_s": 1.5},
        recipient=bob.did,
        trace_id=new_id(),
        parent_id=new_id(),
    )
    return msg.sign(alice)


def contenders(msg: Message, n: int) -> dict[str, Callable[[], None]]:
    raw_encode = msgspec.msgpack.Encoder().encode
    raw_decode = msgspec.msgpack.Decoder(Message).decode
    raw_json_encode = msgspec.json.Encoder().encode
    raw_json_decode = msgspec.json.Decoder(Message).decode
    assert raw_encode(msg) == to_msgpack(msg)
    assert from_msgpack(to_msgpack(msg), Message) == msg
    assert from_json(to_json(msg), Message) == msg

    def converge_msgpack() -> None:
        for _ in range(n):
            from_msgpack(to_msgpack(msg), Message)

    def raw_msgpack() -> None:
        for _ in range(n):
            raw_decode(raw_encode(msg))

    def converge_json() -> None:
        for _ in range(n):
            from_json(to_json(msg), Message)

    def raw_json() -> None:
        for _ in range(n):
            raw_json_decode(raw_json_encode(msg))

    return {
        "converge_msgpack": converge_msgpack,
        "raw_msgpack": raw_msgpack,
        "converge_json": converge_json,
        "raw_json": raw_json,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=100_000, help="round trips per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each contender")
    args = parser.parse_args()
    n: int = args.ops

    for shape, msg, target in (
        ("compact", compact_message(), TARGET),
        ("signed", signed_message(), None),
    ):
        fns = contenders(msg, n)
        interleaved(fns, rounds=1)  # warm-up
        best = interleaved(fns, rounds=args.rounds)
        common = {"ops_per_round": n, "rounds": args.rounds}
        converge_rt = rate(n, best["converge_msgpack"])
        raw_rt = rate(n, best["raw_msgpack"])
        emit(
            bench=BENCH,
            case=f"{shape}_message_msgpack_roundtrip",
            value=converge_rt,
            unit="roundtrips/s",
            target=target,
            informational=target is None,
            raw_msgspec=raw_rt,
            ratio_to_raw=round(converge_rt / raw_rt, 3),
            msgpack_bytes=len(to_msgpack(msg)),
            **common,
        )
        json_rt = rate(n, best["converge_json"])
        raw_json_rt = rate(n, best["raw_json"])
        emit(
            bench=BENCH,
            case=f"{shape}_message_json_roundtrip",
            value=json_rt,
            unit="roundtrips/s",
            informational=True,
            raw_msgspec=raw_json_rt,
            ratio_to_raw=round(json_rt / raw_json_rt, 3),
            json_bytes=len(to_json(msg)),
            **common,
        )


if __name__ == "__main__":
    main()
