from __future__ import annotations

import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from shared.cache import minilm

ROOT = Path(__file__).resolve().parent.parent
PARAPHRASE = ("How do I reset my password?", "What's the way to change my password?")
UNRELATED = [
    ("How do I reset my password?", "What is the capital of France?"),
    ("How do I reset my password?", "Best recipe for banana bread"),
    ("Which vaccines do I need for Kenya?", "How do I undo the last git commit?"),
]
# sentence-transformers' vector for "hello world", first five components, as published in qdrant/fastembed's
# tests (tests/test_text_onnx_embeddings.py, CANONICAL_VECTOR_VALUES): computed by torch, not by this code.
HELLO_WORLD_PREFIX = [-0.034478, 0.03102, 0.00673, 0.02611, -0.039362]


def cosine(a: str, b: str) -> float:
    va, vb = minilm.embed([a, b])
    return float(va @ vb)


def test_importing_the_module_loads_neither_numpy_nor_the_model() -> None:
    code = (
        "import sys, shared.cache.minilm as m; assert m._model is None; "
        "assert not {'numpy', 'tokenizers'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_model_files_come_from_the_installed_package() -> None:
    folder = minilm.model_dir()
    assert folder.parent.name == minilm.MODEL_PACKAGE
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= {p.name for p in folder.iterdir()}


def test_vectors_are_384_float32_unit_vectors() -> None:
    vectors = minilm.embed(["hello world", "flag embedding", ""])
    assert vectors.shape == (3, minilm.DIMENSIONS) == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_embed_texts_returns_plain_lists() -> None:
    rows = minilm.embed_texts(["hello world"])
    assert len(rows) == 1
    assert len(rows[0]) == 384
    assert all(isinstance(x, float) for x in rows[0])


def test_no_texts_no_vectors() -> None:
    assert minilm.embed([]).shape == (0, 384)


def test_a_bare_string_is_refused() -> None:
    with pytest.raises(TypeError):
        minilm.embed("hello world")


def test_the_same_text_gives_the_same_vector() -> None:
    first = minilm.embed(["Where is my parcel?"])
    second = minilm.embed(["Where is my parcel?"])
    assert np.array_equal(first, second)


def test_vectors_match_the_published_sentence_transformers_values() -> None:
    (vector,) = minilm.embed(["hello world"])
    assert np.allclose(vector[:5], HELLO_WORLD_PREFIX, atol=1e-5)


def test_float32_pass_matches_a_float64_recomputation_with_exact_erf() -> None:
    model = minilm.load()
    texts = ["How do I reset my password?", "A longer sentence about token limits, caches and Azure Functions."]
    ids, mask = model.tokenize(texts)
    exact = np.vectorize(math.erf, otypes=[np.float64])
    reference = minilm.Encoder(model.tensors, model.config, dtype="float64", erf_fn=exact)(ids, mask)
    assert np.abs(minilm.embed(texts) - reference).max() < 1e-6


def test_erf_is_accurate_to_a_few_parts_in_ten_million() -> None:
    x = np.linspace(-6.0, 6.0, 20001)
    assert np.abs(minilm.erf(x) - np.vectorize(math.erf)(x)).max() < 2e-7


def test_the_paraphrase_from_the_reference_scores_about_083() -> None:
    assert cosine(*PARAPHRASE) == pytest.approx(0.83, abs=0.02)


def test_a_paraphrase_scores_well_above_unrelated_questions() -> None:
    paraphrase = cosine(*PARAPHRASE)
    for a, b in UNRELATED:
        assert cosine(a, b) < 0.3
        assert paraphrase - cosine(a, b) > 0.5


def test_a_batch_gives_the_vectors_of_single_calls() -> None:
    texts = [
        "short",
        "A somewhat longer question about booking a table for four people on Friday evening?",
        "How many grams of flour are in one cup?",
        "",
    ]
    batch = minilm.embed(texts)
    singles = np.vstack([minilm.embed([t]) for t in texts])
    assert np.allclose(batch, singles, atol=1e-5)


def test_batches_larger_than_the_internal_batch_keep_their_order() -> None:
    texts = [f"question number {i} about {'x ' * (i % 7)}" for i in range(minilm.BATCH_SIZE + 5)]
    batch = minilm.embed(texts)
    for i in (0, 7, minilm.BATCH_SIZE + 4):
        assert np.allclose(batch[i], minilm.embed([texts[i]])[0], atol=1e-5)


def test_long_texts_are_truncated_to_256_tokens() -> None:
    ids, _ = minilm.load().tokenize(["word " * 1000])
    assert ids.shape == (1, minilm.MAX_TOKENS)
    a, b = minilm.embed(["word " * 600, "word " * 1000])
    assert np.allclose(a, b, atol=1e-6)


def test_concurrent_first_calls_load_the_model_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[minilm.Model] = []
    real = minilm.Model

    def counting(folder: Path) -> minilm.Model:
        model = real(folder)
        built.append(model)
        return model

    monkeypatch.setattr(minilm, "_model", None)
    monkeypatch.setattr(minilm, "Model", counting)
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(minilm.embed(["hi"]))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1
    assert len(results) == 4
    assert all(np.array_equal(r, results[0]) for r in results)
