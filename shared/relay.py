"""A backend's stream as the caller receives it, and how it ended, handed over as a value once it ends.

The relay reads the backend's bytes, passes whole events on (`shared.sse`),
keeps the read timeout itself, ends the caller's stream with an error event
if the backend cuts it, and reports its `StreamOutcome` to whoever asked
(`reporting_to`: the proxy, for the breaker) and to `finish()` (the
pipeline, for the meter).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from shared.models import Usage
from shared.sse import PassThrough, SseRelay, error_event

log = logging.getLogger("gateway.proxy")

# A stream is looked at this many times per read timeout to find it idle.
IDLE_LOOKS = 4

StreamEnded = Callable[["StreamOutcome", bool], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    """How a relayed stream ended, known once it has ended."""

    usage: Usage | None
    completed: bool  # ended with [DONE] (Responses: response.completed; bytes: their end)
    error: str | None  # why the backend's side ended early, if it did
    content_events: int  # events that carried generated text (an estimate of tokens sent when cut)


class RelayedStream:
    """A backend's event stream as the caller receives it; iterate it, then `finish()` for its outcome.

    The relay keeps its own state and hands it over as a value when it ends, so
    nothing else is written to while the stream flows.
    """

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        chunks: AsyncIterator[bytes],
        relay: SseRelay | PassThrough,
        first: bytes,
        backend: str,
        *,
        release: Callable[[], None],
        read_timeout: float,
    ) -> None:
        self._response = response
        self._relay = relay
        self._backend = backend
        self._release = release  # the backend slot, held until the backend's side is closed
        self._error: str | None = None
        self._aborted = False
        self._on_end: StreamEnded | None = None
        self._events = self._run(chunks, first)
        # The read timeout between chunks, kept here rather than by aiohttp, which re-arms a timer on every
        # read: a count per read and a look every quarter of the timeout cost far less per event. A stalled
        # loop cannot fake it: each look is its own loop iteration, and sockets are read between them.
        self._reads = 0
        self._seen = 0
        self._idle_looks = 0
        self._timed_out = False
        self._look_every = read_timeout / IDLE_LOOKS
        self._watch = asyncio.get_running_loop().call_later(self._look_every, self._look)

    def reporting_to(self, on_end: StreamEnded) -> None:
        """Call `on_end(outcome, aborted)` once, when the stream has ended (the breaker hears of it then)."""
        self._on_end = on_end

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events

    @property
    def binary(self) -> bool:
        """Bytes passed through (speech, a file's content), not events: nothing in them is generated text."""
        return isinstance(self._relay, PassThrough)

    @property
    def object_id(self) -> str | None:
        """The id a Responses stream announced in its first event (known once the stream is open)."""
        return self._relay.object_id

    async def _run(self, chunks: AsyncIterator[bytes], first: bytes) -> AsyncGenerator[bytes, None]:
        relay = self._relay
        try:
            yield first
            first = b""  # not held for the stream's life by this frame
            async for chunk in chunks:
                self._reads += 1
                out = relay.feed(chunk)
                if out:
                    yield out
            relay.end()
            if not relay.done:
                self._error = "the backend ended the stream early"
                yield error_event("The backend ended the stream before it was complete.", typed=relay.typed)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._error = "TimeoutError" if self._timed_out else type(exc).__name__
            log.warning("backend %s failed mid-stream: %s", self._backend, self._error)
            if isinstance(relay, PassThrough):
                raise  # bytes have no error event: the caller's connection is cut, so it sees a truncated body
            yield error_event("The backend failed while streaming the response.", typed=relay.typed)
        finally:
            self._watch.cancel()
            if relay.done:
                self._response.release()  # read to the end: the connection can be reused
            else:
                self._response.close()
            self._release()

    def _look(self) -> None:
        if self._reads != self._seen:
            self._seen, self._idle_looks = self._reads, 0
        else:
            self._idle_looks += 1
            if self._idle_looks >= IDLE_LOOKS:  # nothing read for a whole read timeout
                self._timed_out = True
                self._response.close()  # the pending read fails; the caller gets an error event
                return
        self._watch = asyncio.get_running_loop().call_later(self._look_every, self._look)

    def abort(self) -> None:
        """Cut the backend's side now (the gateway is shutting down); the caller gets an error event."""
        self._aborted = True  # the gateway's doing: never counted against the backend
        self._response.close()

    async def finish(self) -> StreamOutcome:
        """Close the backend's side (if the caller left early) and say how the stream ended."""
        await self._events.aclose()
        self._watch.cancel()
        if not self._response.closed:  # never iterated: the generator's cleanup did not run
            self._response.close()
        self._release()
        relay = self._relay
        outcome = StreamOutcome(relay.usage, relay.done, self._error, relay.content_events)
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            await on_end(outcome, self._aborted)
        return outcome
