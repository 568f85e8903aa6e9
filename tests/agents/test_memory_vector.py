"""Vector memory: offline embeddings, cosine ranking, metadata filters, persistence."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from converge.agents.memory import (
    Embedder,
    HashingEmbedder,
    MissingExtra,
    SentenceTransformerEmbedder,
    VectorMemory,
)
from converge.errors import ValidationError
from converge.store import SQLiteStore, Store

DOCS = [
    ("The cat sat on the mat.", {"kind": "pets", "lang": "en"}),
    ("Dogs love long walks in the park.", {"kind": "pets", "lang": "en"}),
    ("Stock markets fell sharply on Monday.", {"kind": "finance", "lang": "en"}),
    ("Le chat dort sur le tapis.", {"kind": "pets", "lang": "fr"}),
    ("Interest rates and bond markets moved.", {"kind": "finance", "lang": "en"}),
]


async def filled(store: Store, namespace: str = "kb") -> VectorMemory:
    memory = await VectorMemory.open(store, namespace, HashingEmbedder(1024))
    await memory.add_many(
        [t for t, _ in DOCS], [m for _, m in DOCS], ids=[f"d{i}" for i in range(len(DOCS))]
    )
    return memory


async def test_hashing_embedder_is_deterministic_and_normalised() -> None:
    embedder = HashingEmbedder(64)
    assert isinstance(embedder, Embedder)
    a, b, empty = await embedder.embed(["The cat sat.", "The cat sat.", ""])
    assert a == b
    assert len(a) == 64
    assert math.isclose(math.fsum(x * x for x in a), 1.0)
    assert empty == [0.0] * 64
    # The same text in another process gives the same vector: no salted hash() involved.
    assert HashingEmbedder(64).embed_one("The cat sat.") == a


async def test_search_ranks_by_cosine_similarity(store: Store) -> None:
    memory = await filled(store)
    hits = await memory.search("where did the cat sit", k=3)
    assert hits[0].id == "d0"
    assert hits[0].metadata == {"kind": "pets", "lang": "en"}
    assert hits[0].text == "The cat sat on the mat."
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(hits) == 3
    finance = await memory.search("bond markets", k=2)
    assert {h.id for h in finance} == {"d2", "d4"}
    assert finance[0].id == "d4"  # shares both words


async def test_metadata_filters_and_min_score(store: Store) -> None:
    memory = await filled(store)
    hits = await memory.search("markets", k=5, where={"kind": "pets"})
    assert {h.id for h in hits} <= {"d0", "d1", "d3"}
    assert len(hits) == 3
    french = await memory.search("chat", k=5, where={"lang": ["fr", "de"]})
    assert [h.id for h in french] == ["d3"]
    assert await memory.search("cat", where={"missing": None}) == []
    predicate = await memory.search("cat", k=5, where=lambda m: m.get("lang") == "en")
    assert "d3" not in {h.id for h in predicate}
    strong = await memory.search("stock markets", k=5, min_score=0.3)
    assert [h.id for h in strong] == ["d2"]
    with pytest.raises(ValidationError):
        await memory.search("cat", k=0)


async def test_reopening_the_sqlite_file_gives_the_same_items(tmp_path: Path) -> None:
    path = tmp_path / "vectors.db"
    async with await SQLiteStore.open(path) as store:
        memory = await filled(store)
        generated = await memory.add("A fresh note about cats.", {"kind": "pets"})
        before = await memory.search("cat on a mat", k=6)
    async with await SQLiteStore.open(path) as store:
        again = await VectorMemory.open(store, "kb", HashingEmbedder(1024))
        assert len(again) == len(DOCS) + 1
        assert generated in again
        assert again.get("d3") == memory.get("d3")
        assert await again.search("cat on a mat", k=6) == before  # same order, same scores
        assert (await VectorMemory.open(store, "other", HashingEmbedder(1024))).search_vector(
            [1.0] * 1024
        ) == []


async def test_adding_an_existing_id_replaces_it_and_delete_removes(store: Store) -> None:
    memory = await filled(store)
    await memory.add("Completely new text about rockets.", {"kind": "space"}, id="d0")
    assert len(memory) == len(DOCS)
    hit = (await memory.search("rockets", k=1))[0]
    assert (hit.id, hit.metadata) == ("d0", {"kind": "space"})
    assert await memory.delete("d0")
    assert not await memory.delete("d0")
    again = await VectorMemory.open(store, "kb", HashingEmbedder(1024))
    assert "d0" not in again and len(again) == len(DOCS) - 1


async def test_vectors_of_another_dimension_are_refused(store: Store) -> None:
    await filled(store)
    wrong = await VectorMemory.open(store, "kb", HashingEmbedder(64))
    with pytest.raises(ValidationError) as err:
        await wrong.add("text")
    assert err.value.field == "embedder"
    with pytest.raises(ValidationError) as err:
        await wrong.add_many(["a", "b"], [{}])
    assert err.value.field == "metadatas"


async def test_metadata_that_cannot_be_stored_is_refused(store: Store) -> None:
    memory = await VectorMemory.open(store, "kb", HashingEmbedder(16))
    with pytest.raises(ValidationError) as err:
        await memory.add("text", {"when": object()})
    assert err.value.field == "metadatas[0]"
    assert len(memory) == 0
    assert await store.list("memory/vector/") == []


def test_sentence_transformer_embedder_names_the_extra_when_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    with pytest.raises(MissingExtra) as err:
        SentenceTransformerEmbedder()
    assert err.value.extra == "embed"
    assert "converge-agents[embed]" in str(err.value)
    assert isinstance(err.value, ImportError)


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None,
    reason="the embed extra is not installed (pip install -e '.[embed]': torch, ~1.5 GB)",
)
async def test_the_packaged_model_ranks_by_meaning(store: Store) -> None:
    embedder = SentenceTransformerEmbedder()
    cat, kitten, sheet = await embedder.embed(
        ["a cat sleeps on the sofa", "a kitten naps on the couch", "quarterly spreadsheet totals"]
    )
    assert len(cat) == 384 and math.isclose(sum(x * x for x in cat), 1.0, rel_tol=1e-4)
    similar = sum(a * b for a, b in zip(cat, kitten, strict=True))
    unrelated = sum(a * b for a, b in zip(cat, sheet, strict=True))
    assert similar > unrelated + 0.3
    memory = await VectorMemory.open(store, "kb", embedder)
    for text, meta in DOCS:
        await memory.add(text, meta)
    hits = await memory.search("where did the kitty sit?", k=2, where={"lang": "en"})
    assert hits[0].text == "The cat sat on the mat."
