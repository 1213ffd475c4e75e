"""`python -m shared.admin ...` (subscriptions) and `python -m shared.admin usage ...` (the usage report)."""

from __future__ import annotations

import sys

from shared.admin.cli import main, usage_main

if __name__ == "__main__":
    args = sys.argv[1:]
    raise SystemExit(usage_main(args[1:]) if args[:1] == ["usage"] else main(args))
