"""Fuzz every route of a real gateway over HTTP: no 5xx but 502/503/504, the envelope on every error, JSON on
every answer, and no token reservation left open afterwards.

The routes come from the gateway's own `/openapi.json`; Hypothesis generates
requests around them (methods, paths, queries, keys, and bodies from valid
through mistyped to hostile: deep nesting, lone surrogates, NaN, non-JSON).
The gateway is `python -m local.host` in a process of its own, with two
simulator backends and embedded stores.

    python -m bench.fuzz                    # 5,000 requests
    python -m bench.fuzz --examples 20000 --seed 7

prints requests generated, a histogram of statuses, the 5xx count (target 0)
and every broken rule with the request that broke it. `tests/test_fuzz.py`
runs a bounded version of the same in `make test`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st

from shared.errors import MethodNotAllowed, NotFound
from shared.models import GatewayRequest, Operation
from shared.surface import Body, Relay, Spec, route
from simulator import SimulatorConfig, SimulatorThread

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "fuzz-admin-key-0123456789"
DEPLOYMENTS = ("chat", "embed")
DOCUMENTED_5XX = frozenset({502, 503, 504})
_PAGES = ("/chat", "/dashboard")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND")


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    caller_key: str  # a subscription with limits, never changed by the admin calls the fuzzer makes
    victim_id: str  # a subscription the fuzzer may patch, regenerate and delete
    object_ids: tuple[str, ...]  # a stored response, a file and a batch the caller made, for paths to name
    operations: tuple[tuple[str, str], ...]  # (method, path template), from /openapi.json

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted({path for _, path in self.operations}))


@dataclass(frozen=True, slots=True)
class FuzzRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    declared: int | None = None  # a Content-Length above every limit, sent with a short body on a fresh connection

    def short(self) -> str:
        body = (self.body or b"")[:160]
        size = f" ({len(self.body)} bytes)" if self.body and len(self.body) > 160 else ""
        declared = f" declared={self.declared}" if self.declared is not None else ""
        media = self.headers.get("content-type", "")[:80]
        return (
            f"{self.method} {self.path[:160]} headers={sorted(self.headers)} content-type={media!r}"
            f"{declared} body={body!r}{size}"
        )


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Report:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    by_operation: Counter[tuple[str, int]] = field(default_factory=Counter)  # (operation, status) of forwarded ones

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


# --- what the fuzzer sends ----------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
_messages = st.one_of(
    st.just([{"role": "user", "content": "hi"}]),
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant"])},
            optional={"content": st.one_of(st.text(max_size=40), _json_values)},
        ),
        max_size=3,
    ),
    _json_values,
)
_chat = st.fixed_dictionaries(
    {"messages": _messages},
    optional={
        "model": st.one_of(st.sampled_from(DEPLOYMENTS), st.text(max_size=30), _json_values),
        "stream": st.one_of(st.booleans(), _json_values),
        "stream_options": st.one_of(st.just({"include_usage": True}), _json_values),
        "max_tokens": st.one_of(st.integers(min_value=-5, max_value=40), _json_values),
        "n": st.one_of(st.integers(min_value=-1, max_value=3), _json_values),
        "temperature": _json_values,
    },
)
_embeddings = st.fixed_dictionaries(
    {},
    optional={
        "input": st.one_of(st.text(max_size=30), st.lists(st.text(max_size=10), max_size=3), _json_values),
        "model": st.one_of(st.sampled_from(DEPLOYMENTS), _json_values),
    },
)
_subscription_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=30), _json_values),
        "state": st.one_of(st.sampled_from(["active", "suspended"]), _json_values),
        "expires_at": st.one_of(
            st.sampled_from(["2030-01-01", "nan", "inf", "-inf", "1e300", "9999-12-31T23:59:59-23:59", 1e300, -1]),
            _json_values,
        ),
        "tokens_per_minute": st.one_of(st.integers(min_value=-1, max_value=2**64), _json_values),
        "token_quota": _json_values,
        "token_quota_period": st.one_of(st.sampled_from(["daily", "monthly", "yearly"]), _json_values),
        "allowed_deployments": _json_values,
        "cache_opt_out": _json_values,
        "key": st.one_of(st.sampled_from(["primary", "secondary"]), _json_values),
    },
)

_deployment = st.one_of(st.sampled_from(DEPLOYMENTS), st.text(max_size=30), _json_values)
_completions = st.fixed_dictionaries(
    {"prompt": st.one_of(st.text(max_size=40), st.lists(st.text(max_size=10), max_size=3), _json_values)},
    optional={
        "model": _deployment,
        "stream": st.one_of(st.booleans(), _json_values),
        "stream_options": st.one_of(st.just({"include_usage": True}), _json_values),
        "max_tokens": st.one_of(st.integers(min_value=-5, max_value=40), _json_values),
        "n": st.one_of(st.integers(min_value=-1, max_value=3), _json_values),
    },
)
_image_generations = st.fixed_dictionaries(
    {"prompt": st.one_of(st.text(min_size=1, max_size=40), _json_values)},
    optional={
        "model": _deployment,
        "n": st.one_of(st.integers(min_value=-1, max_value=3), _json_values),
        "size": st.one_of(st.sampled_from(["1024x1024", "256x256", "x"]), _json_values),
        "response_format": st.one_of(st.sampled_from(["url", "b64_json", "gif"]), _json_values),
    },
)
_speech = st.fixed_dictionaries(
    {"input": st.one_of(st.text(min_size=1, max_size=60), _json_values)},
    optional={
        "model": _deployment,
        "voice": st.one_of(st.sampled_from(["alloy", "nova", ""]), _json_values),
        "response_format": st.one_of(st.sampled_from(["mp3", "wav", "pcm", "opus", "midi"]), _json_values),
        "speed": _json_values,
    },
)
_response_input = st.one_of(
    st.text(max_size=40),
    st.just([{"role": "user", "content": "hi"}]),
    st.lists(
        st.fixed_dictionaries(
            {}, optional={"role": st.sampled_from(["user", "system"]), "content": _json_values, "type": _json_values}
        ),
        max_size=3,
    ),
    _json_values,
)


def _responses_create(ids: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "input": _response_input,
            "model": _deployment,
            "stream": st.one_of(st.booleans(), _json_values),
            "store": st.one_of(st.booleans(), _json_values),
            "background": st.one_of(st.booleans(), _json_values),
            "previous_response_id": st.one_of(ids, _json_values),
            "max_output_tokens": st.one_of(st.integers(min_value=-5, max_value=40), _json_values),
            "instructions": _json_values,
        },
    )


def _batches_create(ids: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "input_file_id": st.one_of(ids, _json_values),
            "endpoint": st.one_of(st.just("/chat/completions"), _json_values),
            "completion_window": st.one_of(st.just("24h"), _json_values),
        },
    )


# Bodies a backend accepts, so every operation is also seen succeeding (streams, bytes, stored objects).
_model = st.sampled_from(DEPLOYMENTS)
_words = st.text(st.characters(codec="ascii", categories=["L", "N", "Zs"]), min_size=1, max_size=30)


def _valid_bodies(ids: st.SearchStrategy[str]) -> dict[Operation, st.SearchStrategy[dict[str, Any]]]:
    stream = {"stream": st.booleans()}
    return {
        Operation.CHAT: st.fixed_dictionaries(
            {"model": _model, "messages": _words.map(lambda w: [{"role": "user", "content": w}])},
            optional={**stream, "max_tokens": st.integers(1, 20)},
        ),
        Operation.EMBEDDINGS: st.fixed_dictionaries({"model": _model, "input": _words}),
        Operation.COMPLETIONS: st.fixed_dictionaries(
            {"model": _model, "prompt": _words}, optional={**stream, "max_tokens": st.integers(1, 20)}
        ),
        Operation.IMAGE_GENERATIONS: st.fixed_dictionaries(
            {"model": _model, "prompt": _words}, optional={"response_format": st.sampled_from(["url", "b64_json"])}
        ),
        Operation.SPEECH: st.fixed_dictionaries(
            {"model": _model, "input": _words, "voice": st.just("alloy")},
            optional={"response_format": st.sampled_from(["mp3", "wav", "pcm"])},
        ),
        Operation.RESPONSES_CREATE: st.fixed_dictionaries(
            {"model": _model, "input": _words},
            optional={**stream, "store": st.booleans(), "background": st.booleans(), "previous_response_id": ids},
        ),
        Operation.BATCHES_CREATE: st.fixed_dictionaries(
            {"input_file_id": ids, "endpoint": st.just("/chat/completions"), "completion_window": st.just("24h")}
        ),
    }


# --- multipart uploads ---------------------------------------------------------------------------

KIB = 1024
MIB = 1024 * KIB
# Above every body limit the gateway has (files: 512 MiB): declared, never sent.
_OVER_EVERY_LIMIT = (512 * MIB + 1, 10**12)


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    value: bytes
    filename: str | None = None


def _encode_form(parts: list[Part], boundary: bytes) -> bytes:
    out: list[bytes] = []
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        head = b"Content-Disposition: " + disposition.encode("utf-8", "surrogatepass")
        if part.filename is not None:
            head += b"\r\nContent-Type: application/octet-stream"
        out.append(b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + part.value + b"\r\n")
    return b"".join(out) + b"--" + boundary + b"--\r\n"


# What the file part holds: a few bytes, a JSONL batch line, or (rarely) a large upload that is within the
# operation's own limit yet above the 4 MiB of a JSON body.
_file_bytes = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200),
    st.just(
        b'{"custom_id": "1", "method": "POST", "url": "/chat/completions", '
        b'"body": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}}\n'
    ),
    st.sampled_from([64 * KIB, 4 * MIB + 1]).map(lambda n: b"\0" * n),
)
_text_field = st.one_of(st.text(max_size=20), st.sampled_from(["", "\u00e9\u6f22", 'a"b', "a\r\n\r\nb"]))
_FORM_FIELDS: dict[str, dict[str, st.SearchStrategy[str]]] = {
    "files": {"purpose": st.one_of(st.sampled_from(["batch", "assistants", "fine-tune", "nope"]), _text_field)},
    "audio/transcriptions": {
        "response_format": st.one_of(st.sampled_from(["json", "text", "srt", "vtt", "verbose_json"]), _text_field),
        "language": _text_field,
    },
    "images/edits": {"prompt": _text_field, "n": st.one_of(st.sampled_from(["1", "2", "0", "-1"]), _text_field)},
}
_FORM_FIELDS["audio/translations"] = _FORM_FIELDS["audio/transcriptions"]
_VALID_FORM_FIELDS: dict[str, dict[str, st.SearchStrategy[str]]] = {
    "files": {"purpose": st.just("batch")},
    "audio/transcriptions": {"response_format": st.sampled_from(["json", "text", "srt", "vtt", "verbose_json"])},
    "audio/translations": {"response_format": st.sampled_from(["json", "text", "verbose_json"])},
    "images/edits": {"prompt": _words, "n": st.just("1")},
}
_FILE_PART = {"files": "file", "audio/transcriptions": "file", "audio/translations": "file", "images/edits": "image"}


def _multipart(operation: str) -> st.SearchStrategy[tuple[bytes, str]]:
    """A multipart body and its Content-Type: valid, or with a broken boundary, a missing part, a cut body."""
    fields = {"model": st.one_of(st.sampled_from(DEPLOYMENTS), _text_field), **_FORM_FIELDS[operation]}
    file_name = _FILE_PART[operation]
    file_part = st.builds(
        lambda data, filename: Part(file_name, data, filename),
        _file_bytes,
        st.one_of(st.sampled_from(["a.wav", "batch.jsonl", "image.png"]), st.text(max_size=20)),
    )
    text_parts = st.fixed_dictionaries({}, optional=fields).map(
        lambda chosen: [Part(name, value.encode("utf-8", "surrogatepass")) for name, value in chosen.items()]
    )
    parts = st.builds(
        lambda texts, files, stray: texts + files + stray,
        text_parts,
        st.one_of(st.lists(file_part, min_size=1, max_size=2), st.just([])),  # [] : the file part is missing
        st.lists(st.builds(Part, st.text(max_size=8), st.binary(max_size=20)), max_size=1),
    )
    boundary = st.one_of(
        st.just("fuzzboundary0123456789"),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789'()+_,-./:=?", min_size=1, max_size=70),
    )

    def assemble(chosen: list[Part], bound: str, breakage: str, cut: int) -> tuple[bytes, str]:
        body = _encode_form(chosen, bound.encode())
        media = f"multipart/form-data; boundary={bound}"
        if breakage == "other boundary":
            media = "multipart/form-data; boundary=not-the-one-used"
        elif breakage == "no boundary":
            media = "multipart/form-data"
        elif breakage == "quoted boundary":
            media = f'multipart/form-data; boundary="{bound}"'
        elif breakage == "cut":
            body = body[: cut % (len(body) + 1)]
        elif breakage == "no closing delimiter":
            body = body.removesuffix(b"--" + bound.encode() + b"--\r\n")
        elif breakage == "not multipart":
            media = "application/json"
        return body, media

    breakages = st.sampled_from(
        (
            *("none",),
            *("other boundary", "no boundary", "quoted boundary", "cut", "no closing delimiter", "not multipart"),
        )
    )
    hostile = st.builds(assemble, parts, boundary, breakages, st.integers(min_value=0, max_value=10**6))
    valid_fields = {"model": st.sampled_from(DEPLOYMENTS), **_VALID_FORM_FIELDS[operation]}
    valid_parts = st.builds(
        lambda texts, data: [*texts, Part(file_name, data, "upload.bin")],
        st.fixed_dictionaries(valid_fields).map(lambda chosen: [Part(k, v.encode()) for k, v in chosen.items()]),
        _file_bytes.filter(bool),
    )
    valid = st.builds(assemble, valid_parts, boundary, st.just("none"), st.just(0))
    return st.one_of(valid, hostile)


def _hostile_bytes() -> st.SearchStrategy[bytes]:
    deep = st.integers(min_value=60, max_value=20_000).map(lambda n: b'{"messages": ' + b"[" * n + b"]" * n + b"}")
    surrogate = st.sampled_from(
        [
            rb'{"messages": [{"role": "user", "content": "\ud800"}]}',
            rb'{"input": "\udfff", "model": "embed"}',
            rb'{"name": "\ud83d"}',
            b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": NaN}',
            b'{"expires_at": Infinity, "name": "x"}',
        ]
    )
    return st.one_of(deep, surrogate, st.binary(max_size=64))


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


_bodies = st.one_of(
    st.none(),
    _chat.map(_dump),
    _embeddings.map(_dump),
    _subscription_fields.map(_dump),
    _json_values.map(_dump),
    _hostile_bytes(),
)


def _spec_of(method: str, template: str) -> Spec | None:
    """The forwarded operation a described route names, or None for the gateway's own routes."""
    concrete = re.sub(r"\{(\w+)\}", "x1", template)
    try:
        return route(GatewayRequest(method.upper(), concrete, {}, {}, b"", "")).spec
    except (NotFound, MethodNotAllowed):
        return None


Payload = tuple[bytes | None, str | None]  # a body and the Content-Type it needs (None: the headers' own)


def _body_for(method: str, template: str, ids: st.SearchStrategy[str]) -> st.SearchStrategy[Payload]:
    """Mostly the shape the route reads (so requests get past the first check), else anything."""
    anything = _bodies.map(lambda body: (body, None))
    spec = _spec_of(method, template)
    if spec is not None and spec.body is Body.MULTIPART:
        upload = spec.path.removesuffix("/").split("/{")[0]
        return st.one_of(_multipart(upload), _multipart(upload), _multipart(upload), anything)
    valid = _valid_bodies(ids)
    fitting_by_operation: dict[Operation, st.SearchStrategy[Any]] = {
        Operation.CHAT: _chat,
        Operation.EMBEDDINGS: _embeddings,
        Operation.COMPLETIONS: _completions,
        Operation.IMAGE_GENERATIONS: _image_generations,
        Operation.SPEECH: _speech,
        Operation.RESPONSES_CREATE: _responses_create(ids),
        Operation.BATCHES_CREATE: _batches_create(ids),
    }
    if spec is not None and spec.operation in fitting_by_operation:
        fitting = st.one_of(valid[spec.operation], fitting_by_operation[spec.operation]).map(_dump)
    elif template.startswith("/gateway/admin/subscriptions"):
        fitting = _subscription_fields.map(_dump)
    else:
        return anything
    return st.one_of(fitting, fitting, fitting, _bodies).map(lambda body: (body, None))


_times = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e18", "2e18", "0", "2025-03-01", "2025-03-01T10:00Z", "x", ""]),
    st.floats(allow_nan=True).map(str),
    st.text(max_size=12),
)
_query_values = {
    "api-version": st.one_of(st.just("2024-10-21"), st.text(max_size=50)),
    "from": _times,
    "to": _times,
    "group_by": st.one_of(st.sampled_from(["subscription", "deployment", "backend"]), st.text(max_size=10)),
    "subscription": st.text(max_size=30),
    "period": st.one_of(st.sampled_from(["hourly", "daily", "weekly", "monthly"]), st.text(max_size=10)),
    "at": _times,
    "hours": st.one_of(st.integers(min_value=-5, max_value=10**6).map(str), st.text(max_size=10)),
    "limit": st.one_of(st.integers(min_value=-5, max_value=10**20).map(str), st.text(max_size=10)),
    "after": st.one_of(st.sampled_from(["file-missing", "resp_missing", ""]), st.text(max_size=30)),
    "order": st.one_of(st.sampled_from(["asc", "desc"]), st.text(max_size=10)),
    "purpose": st.one_of(st.sampled_from(["batch", "assistants"]), st.text(max_size=10)),
    "include[]": st.text(max_size=30),
}


def _query() -> st.SearchStrategy[str]:
    from urllib.parse import urlencode  # noqa: PLC0415

    return st.dictionaries(st.sampled_from(sorted(_query_values)), st.text(max_size=0), max_size=3).flatmap(
        lambda chosen: st.fixed_dictionaries({k: _query_values[k] for k in chosen}).map(
            lambda q: ("?" + urlencode(q, safe="")) if q else ""
        )
    )


def _header_value(text: str) -> str:
    # What an HTTP client can send at all: printable ASCII, no line breaks, no surrounding blanks.
    return "".join(c for c in text if " " <= c <= "~").strip() or "x"


def _object_ids(
    target: Target, segment: st.SearchStrategy[str], live: list[str], kind: str = ""
) -> st.SearchStrategy[str]:
    """Ids for a path: real ones, missing ones, and ones no id can be (long, slashes, dots, unicode, escapes).

    `live` grows with the ids of objects the run creates, so later requests name objects that exist; `kind`
    (an id's prefix: "resp", "file", "batch") prefers the ones of the path's collection.
    """
    id_alphabet = st.characters(codec="ascii", categories=["L", "N"], include_characters="_.-")
    known = (target.victim_id, *target.object_ids)

    def pick(i: int) -> str:
        fitting = [x for x in live if x.startswith(kind)] or live or list(known)
        return fitting[i % len(fitting)]

    real = st.integers(min_value=0, max_value=10**6).map(pick)
    return st.one_of(
        real,
        real,
        st.sampled_from(known),
        st.sampled_from(["sub-missing", "resp_missing", "file-missing", "batch_missing", "..", ".", "a..b", "-a"]),
        segment,
        st.integers(min_value=198, max_value=202).map(lambda n: "a" * n),  # the longest id the gateway takes: 200
        st.text(id_alphabet, min_size=201, max_size=5_000),
        st.sampled_from(["a/b", "../files", "a%2Fb", "%2e%2e", "a%00b", "%", "%zz", "a b", "a;b", "a?b=1"]),
        st.text(st.characters(codec="utf-8", exclude_characters="/?#%"), min_size=1, max_size=20),
        st.sampled_from(["r\u00e9sum\u00e9", "\u6f22\u5b57", "\U0001f600", "file-\u0430"]),
    )


def requests(target: Target, live: list[str] | None = None) -> st.SearchStrategy[FuzzRequest]:
    """Requests around the documented routes, and some beside them."""
    segment = st.text(alphabet=st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1, max_size=20)
    live = live if live is not None else []
    ids = _object_ids(target, segment, live)
    kinds = {"/responses/": "resp", "/files/": "file", "/batches/": "batch", "/subscriptions/": "sub-"}

    def fill(template: str) -> st.SearchStrategy[str]:
        params = re.findall(r"\{(\w+)\}", template)
        kind = next((prefix for part, prefix in kinds.items() if part in template), "")
        choices = {
            "deployment": st.one_of(st.sampled_from(DEPLOYMENTS), segment),
            "id": _object_ids(target, segment, live, kind),
            "request_id": st.one_of(segment, ids),
            "model": st.one_of(st.sampled_from(DEPLOYMENTS), ids),
        }
        return st.fixed_dictionaries({p: choices.get(p, segment) for p in params}).map(
            lambda values: re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)
        )

    documented = st.sampled_from(target.paths).flatmap(fill)
    beside = st.one_of(
        documented.map(lambda p: p + "/extra"),
        st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
        st.sampled_from(["/", "/openai", "/gateway/admin", "/gateway/admin/", "/v1", "/admin/x", "/openai/realtime"]),
    )
    good_headers = {"api-key": target.caller_key, "x-admin-key": ADMIN_KEY, "content-type": "application/json"}
    any_headers = st.fixed_dictionaries(
        {},
        optional={
            "api-key": st.one_of(st.just(target.caller_key), st.text(max_size=10)),
            "x-admin-key": st.one_of(st.just(ADMIN_KEY), st.just("wrong")),
            "content-type": st.sampled_from(["application/json", "text/plain", "multipart/form-data"]),
            "x-request-id": st.text(max_size=20),
        },
    ).map(lambda h: {k: _header_value(v) for k, v in h.items()})
    headers = st.one_of(st.just(good_headers), st.just(good_headers), st.just(good_headers), any_headers)

    def build(method: str, path: str, query: str, sent: dict[str, str], payload: Payload) -> FuzzRequest:
        body, media = payload
        if media is not None and "content-type" in sent:  # kept missing when the headers drew none
            sent = {**sent, "content-type": media}
        return FuzzRequest(method, path + query, sent, body)

    def as_documented(operation: tuple[str, str]) -> st.SearchStrategy[FuzzRequest]:
        method, template = operation
        return st.builds(
            lambda p, q, h, b: build(method.upper(), p, q, h, b),
            fill(template),
            _query(),
            headers,
            _body_for(method, template, ids),
        )

    on_route = st.sampled_from(target.operations).flatmap(as_documented)
    off_route = st.builds(
        lambda m, p, q, h, b: FuzzRequest(m, p + q, h, b),
        st.sampled_from(METHODS),
        st.one_of(documented, beside),
        _query(),
        headers,
        _bodies,
    )
    posts = tuple(op for op in target.operations if op[0] in ("post", "patch"))
    oversized = st.builds(
        lambda request, declared: FuzzRequest(request.method, request.path, request.headers, b"{}", declared),
        st.sampled_from(posts).flatmap(as_documented),
        st.one_of(st.sampled_from(_OVER_EVERY_LIMIT), st.integers(min_value=_OVER_EVERY_LIMIT[0], max_value=2**62)),
    )
    return st.one_of(on_route, on_route, on_route, on_route, on_route, on_route, off_route, off_route, oversized)


# --- sending and judging ------------------------------------------------------------------------


class Client:
    """One keep-alive connection, reopened whenever the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._conn: http.client.HTTPConnection | None = None

    def send(self, request: FuzzRequest) -> Answer:
        if request.declared is not None:
            return self._declare(request)
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self._conn.request(
                    request.method, _quote_path(request.path), body=request.body, headers=request.headers
                )
                response = self._conn.getresponse()
                body = response.read()
            except (http.client.HTTPException, ConnectionError) as exc:
                self.close()
                if attempt:
                    raise RuntimeError(f"no answer: {exc!r}") from exc
                continue
            if response.will_close:
                self.close()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        raise AssertionError("unreachable")

    def _declare(self, request: FuzzRequest) -> Answer:
        """A Content-Length the body does not have, on a connection of its own (closed after the answer)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.putrequest(request.method, _quote_path(request.path), skip_accept_encoding=True)
            for name, value in request.headers.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(request.declared))
            conn.endheaders(request.body)
            response = conn.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _quote_path(path: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    where, _, query = path.partition("?")
    # "%" kept: an id may carry its own escapes ("a%2Fb"), or broken ones ("%zz").
    return quote(where, safe="/:@!$&'()*+,;=-._~%") + (f"?{query}" if query else "")


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _spec_at(request: FuzzRequest) -> Spec | None:
    """The forwarded operation a request's path names, if any."""
    try:
        return route(GatewayRequest(request.method, unquote(request.path.split("?", 1)[0]), {}, {}, b"", "")).spec
    except (NotFound, MethodNotAllowed):
        return None


def _passes_bytes(request: FuzzRequest, answer: Answer) -> bool:
    """A 2xx the gateway passes through as the backend made it: speech, file contents, plain-text transcripts."""
    spec = _spec_at(request)
    if not 200 <= answer.status < 300 or spec is None:
        return False
    if spec.relay is Relay.BINARY:
        return True
    transcript = spec.operation in (Operation.TRANSCRIPTIONS, Operation.TRANSLATIONS)
    return transcript and answer.headers.get("content-type", "").startswith("text/")


def problems(request: FuzzRequest, answer: Answer) -> list[str]:
    """The rules every answer keeps; empty when it keeps them all."""
    found: list[str] = []
    if answer.status >= 500 and answer.status not in DOCUMENTED_5XX:
        found.append(f"undocumented {answer.status}")
    if answer.status == 503 and "retry-after" not in answer.headers:
        found.append("503 without Retry-After")
    if "x-request-id" not in answer.headers and answer.status != 400:  # a malformed request has no id to echo
        found.append("no x-request-id")
    if request.method == "HEAD" or answer.status in (204, 304):
        return found
    media = answer.headers.get("content-type", "")
    if media.startswith("text/event-stream"):
        for line in answer.body.decode("utf-8", "replace").splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                try:
                    json.loads(line[6:])
                except ValueError:
                    found.append(f"an event that is not JSON: {line[:80]!r}")
        return found
    if media.startswith("text/plain") and request.path.startswith("/metrics") and answer.status == 200:
        return found
    where = request.path.split("?", 1)[0]
    if answer.status < 400 and (where == "/" or where.startswith(_PAGES)):
        return found  # the browser pages: HTML, scripts, styles, and the redirect to them
    if _passes_bytes(request, answer):
        return found
    try:
        payload = json.loads(answer.body)
    except ValueError:
        return [*found, f"{answer.status} {media} not JSON: {answer.body[:120]!r}"]
    if answer.status >= 400:
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict) or set(error) != {"message", "type", "code", "param"}:
            found.append(f"{answer.status} without the envelope: {answer.body[:160]!r}")
        elif len(answer.body) > 2_000:
            found.append(f"{answer.status} error of {len(answer.body)} bytes (echoes the request?)")
    return found


def open_reservations(client: Client) -> int:
    stats = client.send(FuzzRequest("GET", "/gateway/admin/stats", {"x-admin-key": ADMIN_KEY}, None))
    return int(json.loads(stats.body)["limits"]["open_reservations"])


def settle_and_count_open(client: Client, seconds: float = 5.0) -> int:
    """Open reservations once the streams still being metered have been (bounded wait)."""
    deadline = time.monotonic() + seconds
    while (left := open_reservations(client)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# --- a gateway to fuzz --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin(client: Client, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.send(
        FuzzRequest(method, f"/gateway/admin/{path}", {"x-admin-key": ADMIN_KEY}, json.dumps(body).encode())
    )
    if answer.status >= 300:
        raise RuntimeError(f"{method} {path}: {answer.status} {answer.body[:200]!r}")
    return json.loads(answer.body)  # type: ignore[no-any-return]


def _stored_objects(client: Client, key: str) -> tuple[str, ...]:
    """A stored response, an uploaded file and a batch made through the gateway: ids that exist, on one backend."""
    boundary = "fuzzseed"
    line = b'{"custom_id": "1", "method": "POST", "url": "/chat/completions", "body": {"messages": []}}\n'
    form = _encode_form([Part("purpose", b"batch"), Part("file", line, "batch.jsonl")], boundary.encode())
    media = f"multipart/form-data; boundary={boundary}"
    made: list[str] = []
    for path, body, content_type in (
        ("/v1/responses", json.dumps({"model": "chat", "input": "hi"}).encode(), "application/json"),
        ("/v1/files", form, media),
    ):
        answer = client.send(FuzzRequest("POST", path, {"api-key": key, "content-type": content_type}, body))
        if answer.status != 200:
            raise RuntimeError(f"POST {path}: {answer.status} {answer.body[:200]!r}")
        made.append(json.loads(answer.body)["id"])
    batch = {"input_file_id": made[1], "endpoint": "/chat/completions", "completion_window": "24h"}
    answer = client.send(
        FuzzRequest("POST", "/v1/batches", {"api-key": key, "content-type": "application/json"}, _dump(batch))
    )
    if answer.status != 200:
        raise RuntimeError(f"POST /v1/batches: {answer.status} {answer.body[:200]!r}")
    return (*made, json.loads(answer.body)["id"])


@contextmanager
def gateway(log_path: Path) -> Iterator[Target]:
    """`python -m local.host` with two simulator backends and embedded stores, and two subscriptions."""
    sims = [
        SimulatorThread(SimulatorConfig(name=name, deployments=DEPLOYMENTS, api_key="sim-key")).start()
        for name in ("fuzz-a", "fuzz-b")
    ]
    port = _free_port()
    backends = [
        {"name": sim.config.name, "endpoint": sim.url, "deployments": list(DEPLOYMENTS)}
        | {"auth": {"type": "api_key", "setting": "SIM_KEY"}}
        for sim in sims
    ]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "GATEWAY_BACKENDS": json.dumps(backends),
        "SIM_KEY": "sim-key",
        "GATEWAY_ADMIN_KEY": ADMIN_KEY,
        "GATEWAY_METRICS_ENDPOINT": "true",
        "GATEWAY_STORAGE": "",
        "PYTHONPATH": str(ROOT),
    }
    with log_path.open("wb") as sink:
        host = subprocess.Popen(
            [sys.executable, "-m", "local.host", "--port", str(port), "--log-level", "WARNING"],
            cwd=log_path.parent,  # no local.settings.json there: only this environment
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    client = Client("127.0.0.1", port)
    try:
        deadline = time.monotonic() + 30
        while True:
            if host.poll() is not None:
                raise RuntimeError(f"the gateway exited: {log_path.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start within 30 s")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        caller = _admin(client, "POST", "subscriptions", {"name": "fuzz-caller", "tokens_per_minute": 10**9})
        victim = _admin(client, "POST", "subscriptions", {"name": "fuzz-victim"})
        spec = json.loads(client.send(FuzzRequest("GET", "/openapi.json", {}, None)).body)
        operations = tuple(sorted((method, path) for path, item in spec["paths"].items() for method in item))
        objects = _stored_objects(client, caller["primary_key"])
        yield Target("127.0.0.1", port, caller["primary_key"], victim["id"], objects, operations)
    finally:
        client.close()
        host.send_signal(signal.SIGINT)
        try:
            host.wait(timeout=15)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait()
        for sim in sims:
            sim.stop()


def fuzz(target: Target, examples: int, *, seed: int | None = None, stop_on_problem: bool = False) -> Report:
    """Send `examples` generated requests; count statuses and broken rules (or stop at the first one)."""
    report = Report()
    client = Client(target.host, target.port)
    live: list[str] = list(target.object_ids)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(requests(target, live))
    def one(request: FuzzRequest) -> None:
        answer = client.send(request)
        report.requests += 1
        report.statuses[answer.status] += 1
        if (spec := _spec_at(request)) is not None:
            report.by_operation[spec.operation.value, answer.status] += 1
            if spec.creates is not None and answer.status == 200 and len(live) < 500:
                made = _json_or_none(answer.body)
                if isinstance(made, dict) and isinstance(made.get("id"), str):
                    live.append(made["id"])
        broken = problems(request, answer)
        if broken:
            report.problems.append(f"{'; '.join(broken)} <- {request.short()}")
            if stop_on_problem:
                raise AssertionError(report.problems[-1])

    if seed is not None:
        one = fixed_seed(seed)(one)
    try:
        one()
    finally:
        client.close()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log", type=Path, default=Path("/tmp/gateway-fuzz/host.log"))  # noqa: S108 - a scratch log
    args = parser.parse_args(argv)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with gateway(args.log) as target:
        report = fuzz(target, args.examples, seed=args.seed)
        left = settle_and_count_open(Client(target.host, target.port))
    print(
        f"routes described: {len(target.paths)}; requests generated: {report.requests} "
        f"in {time.monotonic() - started:.0f} s"
    )
    print("statuses: " + ", ".join(f"{status}: {n}" for status, n in sorted(report.statuses.items())))
    per_operation: dict[str, Counter[int]] = {}
    for (operation, status), n in report.by_operation.items():
        per_operation.setdefault(operation, Counter())[status] += n
    for operation, statuses in sorted(per_operation.items()):
        print(f"  {operation}: " + ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items())))
    print(f"5xx: {report.server_errors} (documented 502/503/504 included; target 0)")
    print(f"reservations left open: {left}")
    print(f"broken rules: {len(report.problems)}")
    for problem in report.problems[:20]:
        print("  " + problem)
    if report.problems or left or report.server_errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
