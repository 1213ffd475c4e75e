"""Images and audio: generated images (and edits), transcriptions and translations of uploads, and speech.

    POST /openai/deployments/{d}/images/generations     /openai/v1/images/generations   JSON
    POST /openai/deployments/{d}/images/edits           /openai/v1/images/edits         multipart: image, prompt
    POST /openai/deployments/{d}/audio/transcriptions   /openai/v1/audio/transcriptions multipart: file
    POST /openai/deployments/{d}/audio/translations     /openai/v1/audio/translations   multipart: file
    POST /openai/deployments/{d}/audio/speech           /openai/v1/audio/speech         JSON -> audio bytes

Everything is small, valid and deterministic: an image is an 8x8 PNG whose
colour comes from the prompt (as `b64_json`, or a `url` the simulator itself
serves under /_sim/blobs), a transcript is lorem text chosen by the audio's
bytes, speech is silence as WAV, raw PCM or MP3 frames, as long as the text.
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from simulator import contentfilter, errors
from simulator.request import Call, Endpoint, Upload, encode
from simulator.schema import InvalidRequest
from simulator.store import Store, new_id
from simulator.text import CONTENT_FILTER_TRIGGER, WORDS, completion_text

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

    from simulator.app import Simulator

GENERATE = Endpoint("ImageGenerations_Create")
EDIT = Endpoint("ImageEdits_Create", body="multipart")
TRANSCRIBE = Endpoint("Transcriptions_Create", body="multipart")
TRANSLATE = Endpoint("Translations_Create", body="multipart")
SPEECH = Endpoint("Speech_Create")

IMAGE_FORMATS = frozenset({"url", "b64_json"})
AUDIO_FORMATS = frozenset({"json", "text", "verbose_json", "srt", "vtt"})
# Speech formats the simulator can produce as real (silent) audio, with the content type Azure sends.
SPEECH_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "pcm": "audio/pcm"}
TRANSCRIPT_WORDS = 8
SECONDS_PER_WORD = 0.25


@dataclass(frozen=True, slots=True)
class ImageRequest:
    prompt: str
    n: int
    size: str
    response_format: str


@dataclass(frozen=True, slots=True)
class AudioRequest:
    upload: Upload
    response_format: str
    language: str | None


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    text: str
    voice: str
    response_format: str


def _image_request(fields: dict[str, object], default_format: str) -> ImageRequest:
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequest("'prompt' is required.", "prompt")
    raw_n = fields.get("n", 1)
    n = int(raw_n) if isinstance(raw_n, int | str) and str(raw_n).isdigit() else 0
    if not 1 <= n <= 10:
        raise InvalidRequest("'n' must be between 1 and 10.", "n")
    response_format = fields.get("response_format") or default_format
    if not isinstance(response_format, str) or response_format not in IMAGE_FORMATS:
        raise InvalidRequest("'response_format' must be url or b64_json.", "response_format")
    size = fields.get("size") or "1024x1024"
    return ImageRequest(prompt, n, str(size), str(response_format))


def parse_generation(body: object) -> ImageRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return _image_request(body, "url")


def parse_edit(body: object) -> ImageRequest:
    form = body if isinstance(body, dict) else {}
    image = form.get("image") or form.get("image[]")
    if not (isinstance(image, Upload) or (isinstance(image, list) and image)):
        raise InvalidRequest("'image' must be an image file part.", "image")
    return _image_request(form, "b64_json")


def parse_audio(body: object) -> AudioRequest:
    form = body if isinstance(body, dict) else {}
    upload = form.get("file")
    if not isinstance(upload, Upload) or not upload.data:
        raise InvalidRequest("'file' must be a non-empty audio file part.", "file")
    response_format = form.get("response_format") or "json"
    if not isinstance(response_format, str) or response_format not in AUDIO_FORMATS:
        raise InvalidRequest(f"'response_format' must be one of {', '.join(sorted(AUDIO_FORMATS))}.", "response_format")
    language = form.get("language")
    return AudioRequest(upload, str(response_format), language if isinstance(language, str) else None)


def parse_speech(body: object) -> SpeechRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    text, voice = body.get("input"), body.get("voice")
    if not isinstance(text, str) or not text:
        raise InvalidRequest("'input' is required.", "input")
    if not isinstance(voice, str) or not voice:
        raise InvalidRequest("'voice' is required.", "voice")
    response_format = body.get("response_format") or "mp3"
    if not isinstance(response_format, str) or response_format not in SPEECH_TYPES:
        raise InvalidRequest(
            f"The simulator speaks {', '.join(sorted(SPEECH_TYPES))}; not {response_format}.", "response_format"
        )
    return SpeechRequest(text, voice, str(response_format))


class MediaApi:
    __slots__ = ("_blobs", "_sim")

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        # Images answered as `url` are served from here, as Azure serves them from storage for a while.
        self._blobs: Store[bytes] = Store(sim.config.store_size)

    def clear(self) -> None:
        self._blobs.clear()

    def routes(self, prefix: str, v1: bool) -> list[tuple[str, str, Handler]]:
        def ep(endpoint: Endpoint) -> Endpoint:
            return endpoint.with_v1() if v1 else endpoint

        sim = self._sim
        return [
            ("POST", f"{prefix}/images/generations", sim.handler(ep(GENERATE), parse_generation, self._images)),
            ("POST", f"{prefix}/images/edits", sim.handler(ep(EDIT), parse_edit, self._images)),
            ("POST", f"{prefix}/audio/transcriptions", sim.handler(ep(TRANSCRIBE), parse_audio, self._transcribe)),
            ("POST", f"{prefix}/audio/translations", sim.handler(ep(TRANSLATE), parse_audio, self._translate)),
            ("POST", f"{prefix}/audio/speech", sim.handler(ep(SPEECH), parse_speech, self._speech)),
        ]

    async def _images(self, call: Call, request: ImageRequest, drop_after: int | None) -> web.StreamResponse:
        if CONTENT_FILTER_TRIGGER in request.prompt:
            return errors.content_filtered()
        admission = self._sim.limiter.admit(str(call.deployment), 0)
        if not admission.allowed:
            return self._sim.refused(call, admission)
        data = []
        for index in range(request.n):
            png = tiny_png(zlib.crc32(f"{request.prompt}:{index}".encode()))
            item: dict[str, object] = {
                "revised_prompt": request.prompt,
                "content_filter_results": contentfilter.image_results(),
                "prompt_filter_results": contentfilter.prompt_results(),
            }
            if request.response_format == "b64_json":
                item["b64_json"] = base64.b64encode(png).decode()
            else:
                blob_id = new_id("img_")
                self._blobs.put(blob_id, png)
                item["url"] = f"{call.request.url.origin()}/_sim/blobs/{blob_id}"
            data.append(item)
        body = {"created": int(self._sim.clock.now()), "data": data}
        return await self._sim.respond(call, encode(body), None, drop_after)

    async def blob(self, request: web.Request) -> web.StreamResponse:
        """GET /_sim/blobs/{blob_id}: an image answered as a `url`."""
        blob = self._blobs.get(request.match_info["blob_id"])
        if blob is None:
            return errors.resource_not_found()
        return web.Response(body=blob, content_type="image/png")

    async def _transcribe(self, call: Call, request: AudioRequest, drop_after: int | None) -> web.StreamResponse:
        return await self._audio(call, request, "transcribe", drop_after)

    async def _translate(self, call: Call, request: AudioRequest, drop_after: int | None) -> web.StreamResponse:
        return await self._audio(call, request, "translate", drop_after)

    async def _audio(self, call: Call, request: AudioRequest, task: str, drop_after: int | None) -> web.StreamResponse:
        admission = self._sim.limiter.admit(str(call.deployment), 0)
        if not admission.allowed:
            return self._sim.refused(call, admission)
        text = completion_text(zlib.crc32(request.upload.data) % len(WORDS), TRANSCRIPT_WORDS)
        duration = TRANSCRIPT_WORDS * SECONDS_PER_WORD
        fmt = request.response_format
        if fmt == "text":
            return await self._sim.respond(call, (text + "\n").encode(), None, drop_after, content_type="text/plain")
        if fmt in ("srt", "vtt"):
            return await self._sim.respond(
                call, _subtitles(fmt, text, duration).encode(), None, drop_after, "text/plain"
            )
        body: dict[str, object] = {"text": text}
        if fmt == "verbose_json":
            language = "english" if task == "translate" else (request.language or "english")
            body = {
                "task": task,
                "language": language,
                "duration": duration,
                "text": text,
                "segments": [
                    {
                        "id": 0,
                        "seek": 0,
                        "start": 0.0,
                        "end": duration,
                        "text": text,
                        "tokens": [50364 + i for i in range(TRANSCRIPT_WORDS)],
                        "temperature": 0.0,
                        "avg_logprob": -0.2,
                        "compression_ratio": 1.0,
                        "no_speech_prob": 0.01,
                    }
                ],
            }
        return await self._sim.respond(call, encode(body), None, drop_after)

    async def _speech(self, call: Call, request: SpeechRequest, drop_after: int | None) -> web.StreamResponse:
        admission = self._sim.limiter.admit(str(call.deployment), 0)
        if not admission.allowed:
            return self._sim.refused(call, admission)
        seconds = max(1, len(request.text.split())) * SECONDS_PER_WORD
        audio = speech_audio(request.response_format, seconds)
        content_type = SPEECH_TYPES[request.response_format]
        if drop_after is not None:
            return await self._sim.respond(call, audio, None, drop_after, content_type=content_type)
        # Sent in pieces, as the service streams speech while it is produced.
        response = web.StreamResponse()
        response.content_type = content_type
        await response.prepare(call.request)
        for start in range(0, len(audio), 4096):
            await response.write(audio[start : start + 4096])
        await response.write_eof()
        return response


def tiny_png(seed: int, side: int = 8) -> bytes:
    """A valid `side`x`side` RGB PNG of one colour chosen by `seed`."""
    colour = bytes((seed >> shift) & 0xFF for shift in (0, 8, 16))
    raw = b"".join(b"\x00" + colour * side for _ in range(side))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


_PCM_RATE = 24_000  # what the service's pcm format is: 24 kHz, 16-bit, mono


def speech_audio(fmt: str, seconds: float) -> bytes:
    """`seconds` of silence as WAV, raw PCM or MP3."""
    if fmt == "mp3":
        # MPEG-1 Layer III, 32 kbit/s, 44.1 kHz, mono: 104-byte frames of 1152 samples, all-zero (silent) data.
        frames = max(1, round(seconds * 44_100 / 1152))
        return (b"\xff\xfb\x10\xc0" + bytes(100)) * frames
    pcm = bytes(int(seconds * _PCM_RATE) * 2)
    if fmt == "pcm":
        return pcm
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, 1, _PCM_RATE, _PCM_RATE * 2, 2, 16,
        b"data", len(pcm),
    )  # fmt: skip
    return header + pcm


def _subtitles(fmt: str, text: str, duration: float) -> str:
    end = f"00:00:{duration:06.3f}"
    if fmt == "vtt":
        return f"WEBVTT\n\n00:00:00.000 --> {end}\n{text}\n"
    return f"1\n00:00:00,000 --> {end.replace('.', ',')}\n{text}\n"
