"""The semantic cache, one room per concept.

`config` (GATEWAY_CACHE, typed), `key` (scope, exact key, lookup text),
`stage` (the `Cache` stage: lookup, hits, stores), `storable` (what may be
stored), `recorder` (streamed misses), `replay` (streamed hits), `guard` and
`guard_words` (the near-miss guard), `verify` (every semantic candidate's
check: the guard, then a swapped or added content word), `embedders` and `minilm` (prompt to
vector). Its store is a `VectorStore` (`shared.stores.protocols`), chosen by
`shared.stores.factory`. Nothing is imported here, so `shared.config` can read
`cache.config` without loading the stage or numpy.
"""
