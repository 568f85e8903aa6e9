"""Hypothesis strategies shared by the core and protocol tests."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from converge.core import Identity, Message, new_id
from converge.protocol import (
    Attestation,
    Constraints,
    Event,
    Intent,
    Offer,
    Receipt,
    TaskDone,
    TaskProgress,
    TaskStart,
    Usage,
)

# A few fixed identities: generating keys inside every example would only slow the tests down.
IDENTITIES = tuple(Identity.from_private_bytes(bytes([i]) * 32) for i in range(1, 5))
DIDS = tuple(i.did for i in IDENTITIES)

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False)
fractions = st.floats(min_value=0, max_value=1)
non_negative = st.floats(min_value=0, max_value=1e12)
short_text = st.text(max_size=12)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
dids = st.sampled_from(DIDS)
ids = st.builds(new_id)
signatures = st.binary(min_size=64, max_size=64)

# -- hostile input --------------------------------------------------------------------------------

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_text = st.text(st.characters(exclude_categories=()) | surrogates, max_size=40)
"""Any str, lone surrogates (which have no UTF-8 form) drawn often."""


def _edit(did: str, at: int, char: str, how: int) -> str:
    at %= len(did)
    if how == 0:
        return did[:at] + char + did[at + 1 :]  # replace
    if how == 1:
        return did[:at] + char + did[at:]  # insert
    return did[:at] + did[at + 1 :]  # delete


odd_dids = st.one_of(
    any_text,
    st.text(B58, max_size=120).map(lambda t: "did:key:z" + t),  # base58, any length
    st.builds(_edit, dids, st.integers(0, 55), st.characters() | surrogates, st.integers(0, 2)),
    st.integers(1_000, 400_000).map(lambda n: "did:key:z6Mk" + "x" * n),  # huge
    st.builds(lambda did, n: did * n, dids, st.integers(2, 8_000)),
)
"""Strings that are not Ed25519 dids: any text, base58 of the wrong length, a did with one
character changed, added or removed, and dids of up to 400,000 characters."""

non_finite = st.sampled_from([math.nan, math.inf, -math.inf])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | finite_floats
    | short_text
)


def _tree(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_text, inner, max_size=4),
        max_leaves=12,
    )


json_values = _tree(json_scalars)
"""Anything JSON carries unchanged: nested dicts and lists of None, bool, int, finite float, str."""

msgpack_values = _tree(json_scalars | st.binary(max_size=16))
"""``json_values`` plus bytes, which MessagePack (but not JSON) carries unchanged."""

json_objects = st.dictionaries(short_text, json_values, max_size=4)
msgpack_objects = st.dictionaries(short_text, msgpack_values, max_size=4)


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy`` or None."""
    return st.none() | strategy


def messages(payloads: st.SearchStrategy[Any] = msgpack_values) -> st.SearchStrategy[Message]:
    topic_or_recipient = st.one_of(
        st.tuples(st.none(), st.sampled_from(["market.gpu", "chat", "a.b.c"])),
        st.tuples(dids, st.none()),
    )
    return st.builds(
        lambda tr, **kw: Message(recipient=tr[0], topic=tr[1], **kw),
        topic_or_recipient,
        kind=names,
        payload=payloads,
        sender=st.just("") | dids,
        trace_id=opt(ids),
        parent_id=opt(ids),
        created_at=timestamps,
    )


def usages() -> st.SearchStrategy[Usage]:
    counts = st.integers(min_value=0, max_value=2**40)
    return st.builds(
        Usage, tokens_in=counts, tokens_out=counts, tool_calls=counts, cost=non_negative
    )


def intents(values: st.SearchStrategy[Any] = msgpack_objects) -> st.SearchStrategy[Intent]:
    return st.builds(
        Intent,
        goal=st.text(min_size=1, max_size=20),
        capability=names,
        inputs=values,
        constraints=st.builds(
            Constraints,
            max_cost=opt(non_negative),
            deadline=opt(timestamps),
            min_quality=opt(fractions),
            required_capabilities=st.lists(names, max_size=3).map(tuple),
        ),
        utility=st.dictionaries(names, finite_floats, max_size=4),
        bid_window_s=st.floats(min_value=0.001, max_value=1e6),
        issuer=st.just("") | dids,
        created_at=timestamps,
        signature=opt(signatures),
    )


def offers(values: st.SearchStrategy[Any] = msgpack_objects) -> st.SearchStrategy[Offer]:
    return st.builds(
        Offer,
        intent_id=ids,
        capability=names,
        cost=non_negative,
        currency=st.sampled_from(["USD", "EUR", "credits"]),
        latency_s=opt(non_negative),
        quality=opt(fractions),
        reliability=opt(fractions),
        resource_limits=values,
        terms=values,
        expires_at=opt(timestamps),
        provider=dids,
        trace_id=ids,
        created_at=timestamps,
        signature=opt(signatures),
    )


def task_starts(values: st.SearchStrategy[Any] = msgpack_objects) -> st.SearchStrategy[TaskStart]:
    return st.builds(
        TaskStart,
        task_id=ids,
        executor=dids,
        inputs=values,
        intent_id=opt(ids),
        offer_id=opt(ids),
        agreed_cost=opt(non_negative),
        deadline=opt(timestamps),
        requester=dids,
        trace_id=ids,
        issued_at=timestamps,
        signature=opt(signatures),
    )


def task_progresses(
    values: st.SearchStrategy[Any] = msgpack_objects,
) -> st.SearchStrategy[TaskProgress]:
    return st.builds(
        TaskProgress,
        task_id=ids,
        seq=st.integers(min_value=0, max_value=2**31),
        progress=fractions,
        message=short_text,
        data=values,
        executor=dids,
        trace_id=ids,
        at=timestamps,
        signature=opt(signatures),
    )


def task_dones(values: st.SearchStrategy[Any] = msgpack_values) -> st.SearchStrategy[TaskDone]:
    status_error = st.one_of(
        st.tuples(st.just("completed"), opt(short_text)),
        st.tuples(st.sampled_from(["failed", "cancelled"]), st.text(min_size=1, max_size=12)),
    )
    return st.builds(
        lambda se, **kw: TaskDone(status=se[0], error=se[1], **kw),
        status_error,
        task_id=ids,
        output=values,
        usage=usages(),
        started_at=opt(timestamps),
        finished_at=timestamps,
        executor=dids,
        trace_id=ids,
        signature=opt(signatures),
    )


def receipts() -> st.SearchStrategy[Receipt]:
    return st.builds(
        Receipt,
        task_id=ids,
        executor=dids,
        requester=dids,
        status=st.sampled_from(["completed", "failed", "cancelled"]),
        output_digest=st.binary(min_size=32, max_size=32).map(bytes.hex),
        intent_id=opt(ids),
        usage=usages(),
        cost=non_negative,
        currency=st.sampled_from(["USD", "EUR"]),
        trace_id=ids,
        issued_at=timestamps,
        executor_signature=opt(signatures),
        requester_signature=opt(signatures),
    )


def attestations(
    values: st.SearchStrategy[Any] = msgpack_objects,
) -> st.SearchStrategy[Attestation]:
    return st.builds(
        Attestation,
        subject=ids,
        claim=names,
        subject_kind=st.sampled_from(["", "receipt", "event", "agent"]),
        data=values,
        expires_at=opt(timestamps),
        attester=dids,
        trace_id=opt(ids),
        issued_at=timestamps,
        signature=opt(signatures),
    )


event_kinds = st.from_regex(r"\A[a-z][a-z0-9_]{0,6}(\.[a-z][a-z0-9_]{0,6}){1,3}\Z")


def events(values: st.SearchStrategy[Any] = msgpack_objects) -> st.SearchStrategy[Event]:
    return st.builds(
        Event,
        kind=event_kinds,
        trace_id=ids,
        actor=st.just("") | dids,
        subject=st.just("") | ids,
        data=values,
        parent_id=opt(ids),
        at=timestamps,
        seq=st.integers(min_value=0, max_value=2**62),
    )


def protocol_objects(json: bool) -> st.SearchStrategy[Any]:
    """One of every protocol object type; ``json=True`` keeps bytes out of free-form fields."""
    values = json_values if json else msgpack_values
    objects = json_objects if json else msgpack_objects
    return st.one_of(
        intents(objects),
        offers(objects),
        task_starts(objects),
        task_progresses(objects),
        task_dones(values),
        receipts(),
        attestations(objects),
        events(objects),
        messages(values),
    )
