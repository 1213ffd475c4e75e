"""Money budgets per subscription: spend costed from GATEWAY_PRICES, shared by instances, alerts once, refused at 100 %.

Where each part lives: `keeper` (`BudgetKeeper`: the check before a call,
the charge after it, the shared spend record and the claim of each alert),
`alerts` (the alert: a structured log line, a metric, a signed webhook sent
in the background with retries).

A subscription's `budget` is an amount in its currency per day, ISO week or
month (UTC), with alert thresholds in percent (50, 80, 100 by default) and an
action at 100 %: `refuse` (403 `budget_exceeded` until the period ends) or
`alert` only. A call's cost is its prompt tokens at the deployment's
`input` price (those the backend served from its prompt cache at
`cached_input`, when priced), plus its completion tokens at `output`;
answers from the gateway's own cache cost nothing.

Spend is shared through one counter record per subscription (`CounterStore`,
row "budget": the period, the spend in millionths, and the highest
threshold alerted). An instance adds what it charged with one
compare-and-swap at most every GATEWAY_BUDGET_SYNC_SECONDS per subscription,
and at once when its own view crosses the next threshold; the same write
reads what every other instance has added. A threshold's alert is sent by
the instance whose write moved the record's "alerted" mark past it: exactly
once per period, across instances. So refusal lags real spend by at most
one sync interval of every instance's traffic (money budgets are soft
limits; token quotas are the hard ones). Spend not yet written when a
period ends counts in the next one.
"""
