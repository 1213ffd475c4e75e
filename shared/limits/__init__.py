"""Token and request limits per subscription, shared by every instance at a small, bounded storage cost.

Where each part lives: `windows` (the fixed UTC windows), `estimate` (what a
call is expected to use), `lease` (what a lease takes from the shared record,
as pure functions, and this instance's held lease), `limiter` (`SharedLimiter`,
the `Limiter` protocol, `Admission`), `headers` (the x-ratelimit-* headers and
the 429 / 403 answers that carry them).

Before the call the pipeline asks `admit` to reserve an estimate (prompt
tokens counted offline, plus `max_tokens` or GATEWAY_DEFAULT_COMPLETION_TOKENS)
and one request; after it, `settle` replaces the reservation by the real usage
(0 refunds it all). Three limits apply, each in fixed windows aligned to UTC:
tokens per minute and requests per minute (window of GATEWAY_RATE_WINDOW_SECONDS,
60 by default; limits scale to it) and a token quota per hour, day, ISO week
(from Monday) or month. Over TPM or RPM: 429 with `Retry-After` and
`retry-after-ms` (until the window ends: only then does capacity return).
Over the quota: 403 with the reset time.

How instances share a window without a storage round trip per request:
one counter record per (subscription, rate | quota) in the `CounterStore`
holds the window and the tokens and requests *leased* in it by all instances.
An instance takes a lease (a slice of what is free) with one compare-and-swap
and reserves from it in memory until it is spent or the window ends; refunds
go back into the lease and are reused. A slice is

    max(needed now, min(free, ceil(free / 4), 60 s of this instance's recent use))

so slices shrink geometrically as the window fills (the last ones are the
size of single requests), and an instance with little traffic holds little.
A lease left alone for a quarter of its window (at most 60 s: no request for
that subscription reached the instance) is given back.
Once the record is full an instance stops asking (no I/O per refused
request) until a quarter of the window (at most 60 s) has passed.

The bound, per window of capacity C, with N instances sharing it:

* upper: leases never pass C, and reservations never pass leases, so tokens
  admitted in a window are at most C plus what requests used beyond their
  reservation (only a prompt estimate below the real count can cause that;
  the completion part is capped by max_tokens). Such overage is charged to the
  shared record at the instance's next write.
* lower, while every instance keeps receiving more than it may admit: an
  instance refuses only when its lease plus the record's free capacity is
  smaller than the request, so capacity left unused is below N times the
  largest reservation, plus the over-reservation (reserved minus used) of
  requests still running when the window closes: their refund comes too late
  for that window. Reservations close to real usage (clients that set
  max_tokens) keep that term small; GATEWAY_DEFAULT_COMPLETION_TOKENS is what
  is reserved otherwise. An instance that dies holding a lease strands it until
  the window ends: at most a quarter of what was free when it leased.
* clocks: windows are read from each instance's clock; one that runs ahead
  opens the next window early (by its skew, sub-second with NTP) and one that
  runs behind is refused until its clock reaches the record's window.
* cost: about two transactions (read, conditional write) per lease; per
  window and subscription about N + 4 ln(C / (C - U)) leases when the
  instances admit U tokens (plus about 4 ln(C / (N a)) more when a window is
  driven to full, a being the request size) - independent of the request rate.

When the counter store is unavailable, each instance enforces the limits on
its own from what it last saw of the record (so N instances may together
admit up to N times the remaining capacity), logs one warning, counts it in
`stats()`, and tries storage again every few seconds; what it admitted
meanwhile is charged to the shared record when storage answers again.
GATEWAY_LIMITS_FAIL_CLOSED=true refuses instead (503).
"""
