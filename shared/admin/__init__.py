"""The operator's side of the gateway: subscriptions, usage reports, backend state, and the command line.

subscriptions.py  the subscription service (validation, keys shown once, the local demo)
access.py         who may use the admin API (the admin key)
http.py           the admin HTTP routes under /gateway/admin/
usage.py          usage views: /usage for a subscriber, /gateway/admin/usage for operators
backends.py       breaker, throttle and probe state of every backend; this instance's counters
cli.py            `python -m shared.admin ...`, on the stores or through a running gateway
"""
