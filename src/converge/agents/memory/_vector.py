"""``VectorMemory``: texts and embeddings, searched by cosine similarity.

Each text has metadata and its embedding.

Each item is one record at ``memory/vector/<namespace>/<id>``: its text, its metadata and its
embedding as little-endian float32 bytes, all MessagePack (no pickle). ``open`` loads every
record into an in-process index; search is brute force in plain Python (a dot product of
normalised vectors per candidate, ``heapq.nlargest`` for the top k), which is fine for the tens
of thousands of items an agent's memory holds; dot products use ``math.fsum``, and numpy is not
a dependency. Metadata filters run before scoring (``{"k": v}`` equality, a list value means
one of, or a predicate). Vectors are rounded to float32 before they are indexed, so scores are
identical before and after a reopen. One embedder per namespace: a vector of another dimension
is refused. Other processes' additions appear after ``reload()``.
"""

from __future__ import annotations

import builtins
import heapq
import math
import operator
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from converge.agents.memory._embed import Embedder
from converge.agents.memory._persist import check_name, decode, encode, remove
from converge.core.ids import new_id
from converge.errors import ConflictError, ValidationError
from converge.protocol.event import Event
from converge.store.base import Store

__all__ = ["Hit", "VectorMemory", "VectorRecord", "Where"]

PREFIX = "memory/vector/"

Where = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]
"""A metadata filter: ``{"key": value}`` (equal; a list, tuple or set value means one of them;
every key must match), or a predicate on the metadata."""

_ABSENT = object()


class VectorRecord(msgspec.Struct, frozen=True):
    """One item as stored."""

    id: str
    """The item's id."""
    text: str
    """The text that was embedded."""
    vector: bytes
    """The embedding: little-endian float32s."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Anything the caller attached, for filters and for the hits."""


class Hit(msgspec.Struct, frozen=True):
    """One search result."""

    id: str
    """The item's id."""
    text: str
    """Its text."""
    score: float
    """Cosine similarity to the query, from -1 to 1."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Its metadata."""


class VectorMemory:
    """Texts with metadata, embedded by an ``Embedder``, kept in the store and searched by
    cosine similarity.

    Open with ``await VectorMemory.open(store, namespace, embedder)``; reopening on the same
    store gives the same items. Items written by another process appear after ``reload()``.

    Args:
        store: where the items are kept.
        namespace: groups the items (one key segment: no ``/``).
        embedder: turns texts into vectors (``HashingEmbedder`` works offline).
        id_factory: makes ids for items added without one.
        actor: who writes, recorded on the events.
    """

    def __init__(
        self,
        store: Store,
        namespace: str,
        embedder: Embedder,
        *,
        id_factory: Callable[[], str] = new_id,
        actor: str = "",
    ) -> None:
        self.namespace = check_name(namespace, "namespace")
        self.store = store
        self.embedder = embedder
        self.actor = actor
        self._id_factory = id_factory
        self._prefix = f"{PREFIX}{namespace}/"
        self._items: dict[str, tuple[VectorRecord, list[float]]] = {}
        self.dimension: int | None = None
        """The vectors' length (None until the first item)."""

    @classmethod
    async def open(
        cls,
        store: Store,
        namespace: str,
        embedder: Embedder,
        *,
        id_factory: Callable[[], str] = new_id,
        actor: str = "",
    ) -> VectorMemory:
        """The namespace's items as stored."""
        memory = cls(store, namespace, embedder, id_factory=id_factory, actor=actor)
        await memory.reload()
        return memory

    async def reload(self) -> None:
        """Rebuild the index from the store."""
        items: dict[str, tuple[VectorRecord, list[float]]] = {}
        dimension = None
        for entry in await self.store.list(self._prefix):
            record = decode(entry.value, VectorRecord, "stored vector item")
            unit = _unit(_from_bytes(record.vector))
            dimension = len(unit)
            items[record.id] = (record, unit)
        self._items, self.dimension = items, dimension

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def get(self, item_id: str) -> VectorRecord | None:
        """The stored item, or None."""
        found = self._items.get(item_id)
        return None if found is None else found[0]

    # -- writing ---------------------------------------------------------------------------------

    async def add(
        self, text: str, metadata: Mapping[str, Any] | None = None, *, id: str | None = None
    ) -> str:
        """Embed and store one text (an existing ``id`` is replaced); returns its id."""
        return (await self.add_many([text], [metadata or {}], ids=None if id is None else [id]))[0]

    async def add_many(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        *,
        ids: Sequence[str] | None = None,
    ) -> builtins.list[str]:
        """Embed ``texts`` in one call and store them in one unit of work; returns their ids.

        Raises:
            ValidationError: lengths differ, a text is not a str, metadata cannot be encoded, or
                the embedder returned vectors of the wrong count, length or with NaNs.
        """
        if isinstance(texts, str):
            raise ValidationError("texts is a sequence of str, not one str", field="texts")
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        ids = [check_name(i, "id") for i in ids] if ids is not None else None
        for name, seq in (("metadatas", metadatas), ("ids", ids)):
            if seq is not None and len(seq) != len(texts):
                raise ValidationError(
                    f"{name} has {len(seq)} items for {len(texts)} texts", field=name
                )
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValidationError(f"texts[{i}] is not a str", field=f"texts[{i}]")
        if not texts:
            return []
        vectors = await self.embedder.embed(list(texts))
        units = self._check_vectors(vectors, len(texts))
        new_ids = ids or [self._id_factory() for _ in texts]
        records = [
            VectorRecord(item_id, text, _to_bytes(v), dict(meta))
            for item_id, text, v, meta in zip(new_ids, texts, vectors, metadatas, strict=True)
        ]
        async with self.store.transaction() as tx:
            for i, record in enumerate(records):
                tx.put(self._prefix + record.id, encode(record, "vector item", f"metadatas[{i}]"))
            tx.append(
                Event(
                    kind="memory.vector.added",
                    trace_id=self.namespace,
                    actor=self.actor,
                    subject=self._prefix,
                    data={"ids": new_ids},
                )
            )
        for record, unit in zip(records, units, strict=True):
            self._items[record.id] = (record, unit)
        self.dimension = len(units[0])
        return new_ids

    async def delete(self, item_id: str) -> bool:
        """Remove an item; returns whether it existed."""
        key = self._prefix + check_name(item_id, "id")
        entry = await self.store.get(key)
        self._items.pop(item_id, None)
        if entry is None:
            return False
        try:
            await remove(
                self.store,
                key,
                entry.version,
                kind="memory.vector.deleted",
                trace_id=self.namespace,
                actor=self.actor,
            )
        except ConflictError:
            # Replaced meanwhile by another writer: theirs stands; read it back.
            await self.reload()
            return False
        return True

    # -- searching -------------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        k: int = 4,
        *,
        where: Where | None = None,
        min_score: float | None = None,
    ) -> builtins.list[Hit]:
        """The ``k`` items most similar to ``query``, best first (ties by id).

        Args:
            query: the text to look for.
            k: the most hits returned.
            where: a metadata filter (see ``Where``); items that fail it are not scored.
            min_score: drop hits scoring below this.
        """
        (vector,) = await self.embedder.embed([query])
        return self.search_vector(vector, k, where=where, min_score=min_score)

    def search_vector(
        self,
        vector: Sequence[float],
        k: int = 4,
        *,
        where: Where | None = None,
        min_score: float | None = None,
    ) -> builtins.list[Hit]:
        """Like ``search``, for a vector already embedded."""
        if not isinstance(k, int) or k < 1:
            raise ValidationError(f"k must be an int >= 1, not {k!r}", field="k")
        if not self._items:
            return []
        (query,) = self._check_vectors([vector], 1)
        match = _matcher(where)
        dot = operator.mul
        scored = (
            (math.fsum(map(dot, query, unit)), record)
            for record, unit in self._items.values()
            if match(record.metadata)
        )
        if min_score is not None:
            scored = ((s, r) for s, r in scored if s >= min_score)
        best = heapq.nsmallest(k, scored, key=lambda sr: (-sr[0], sr[1].id))
        return [Hit(r.id, r.text, s, r.metadata) for s, r in best]

    def _check_vectors(self, vectors: object, count: int) -> builtins.list[builtins.list[float]]:
        if not isinstance(vectors, Sequence) or len(vectors) != count:
            raise ValidationError(
                f"the embedder returned {len(vectors) if isinstance(vectors, Sequence) else 0} "
                f"vectors for {count} texts",
                field="embedder",
            )
        units = []
        for v in vectors:
            # Round through float32 so scores are the same before and after a reopen.
            try:
                floats = _from_bytes(_to_bytes(v))
            except (TypeError, OverflowError) as exc:
                raise ValidationError(f"not a vector of floats: {exc}", field="embedder") from exc
            if self.dimension is not None and len(floats) != self.dimension:
                raise ValidationError(
                    f"vectors here have {self.dimension} dimensions, the embedder gave "
                    f"{len(floats)}; use one embedder per namespace",
                    field="embedder",
                )
            if not floats or not all(math.isfinite(x) for x in floats):
                raise ValidationError("the embedder returned an empty or non-finite vector")
            units.append(_unit(floats))
        return units


def _matcher(where: Where | None) -> Callable[[Mapping[str, Any]], bool]:
    if where is None:
        return lambda _meta: True
    if callable(where):
        return where
    wanted = [
        (key, frozenset(v) if isinstance(v, (list, tuple, set, frozenset)) else None, v)
        for key, v in where.items()
    ]

    def match(meta: Mapping[str, Any]) -> bool:
        for key, options, value in wanted:
            found = meta.get(key, _ABSENT)
            if found is _ABSENT:
                return False
            if options is not None:
                if not _hashable(found) or found not in options:
                    return False
            elif found != value:
                return False
        return True

    return match


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _to_bytes(vector: Sequence[float]) -> bytes:
    packed = array("f", vector)
    if sys.byteorder == "big":  # pragma: no cover - stored little-endian everywhere
        packed.byteswap()
    return packed.tobytes()


def _from_bytes(data: bytes) -> builtins.list[float]:
    packed = array("f")
    packed.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover
        packed.byteswap()
    return packed.tolist()


def _unit(vector: builtins.list[float]) -> builtins.list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector
