"""The one HTTP session's handle: how stages and stores ask the composition root for the worker's aiohttp session.

A leaf module, so the proxy (a stage) and the Azure stores take the same type
without either importing the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import aiohttp

# Built lazily inside the running event loop, on first use, by `Gateway.session`.
SessionProvider: TypeAlias = Callable[[], Awaitable["aiohttp.ClientSession"]]
