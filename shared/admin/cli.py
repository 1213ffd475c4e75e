"""The operator's command line: `python -m shared.admin <command>` for subscriptions, `... usage` for reports.

This is the one module besides the configuration that reads the environment:
it is an entry point, and the environment is where an operator's settings are.

Two ways to reach the subscriptions, same operations and answers:

* directly on the stores, with the gateway's own storage settings in the
  environment (`GATEWAY_STORAGE` locally, `GATEWAY_STORAGE__tableServiceUri`
  with an Entra identity that may write the tables in Azure);
* through a running gateway's admin API: `--url https://<app>.azurewebsites.net`
  with `--admin-key` (or `GATEWAY_ADMIN_KEY`).

Examples:

    python -m shared.admin create --name team-a --tpm 60000 --rpm 300 --token-quota 5000000 --token-quota-period monthly
    python -m shared.admin list
    python -m shared.admin update sub-0123 --state suspended
    python -m shared.admin regenerate sub-0123 --key secondary
    python -m shared.admin --url http://127.0.0.1:7071 --admin-key ... backends
    python -m shared.admin usage --from 2025-06-01 --group-by deployment
    python -m shared.admin update sub-0123 --prompt-log on        (or off, or gpt-4o-mini,other-deployment)
    python -m shared.admin promptlog 6f1c0e... --at 2025-06-01T14:05Z
    python -m shared.admin audit --limit 20

Changes made here on the stores are written to the audit trail as `cli:<your user name>`.

Keys are printed once, when created or regenerated, and never again.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from shared.admin.usage import GROUPS
from shared.errors import ConfigError, GatewayError

if TYPE_CHECKING:
    from shared.stores.factory import Stores

T = TypeVar("T")

_NONE = "none"  # clears a limit or the expiry
_PLACEHOLDER_BACKENDS = '[{"name": "unused", "endpoint": "http://unused.invalid", "deployments": ["unused"]}]'


def _limit(text: str) -> int | None:
    if text.lower() == _NONE:
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a positive whole number, or 'none'")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.admin", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running gateway (its admin API); default: the stores, from the environment")
    parser.add_argument("--admin-key", default=os.environ.get("GATEWAY_ADMIN_KEY"), help="default: GATEWAY_ADMIN_KEY")
    commands = parser.add_subparsers(dest="command", required=True)

    def fields(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--name")
        sub.add_argument("--tokens-per-minute", "--tpm", type=_limit, default=argparse.SUPPRESS)
        sub.add_argument("--requests-per-minute", "--rpm", type=_limit, default=argparse.SUPPRESS)
        sub.add_argument("--token-quota", type=_limit, default=argparse.SUPPRESS)
        sub.add_argument(
            "--token-quota-period", choices=["hourly", "daily", "weekly", "monthly", _NONE], default=argparse.SUPPRESS
        )
        sub.add_argument("--state", choices=["active", "suspended"])
        sub.add_argument("--expires-at", default=argparse.SUPPRESS, help="ISO 8601 time, or 'none'")
        sub.add_argument("--allowed-deployments", default=argparse.SUPPRESS, help="comma-separated; '' for all")
        sub.add_argument(
            "--prompt-log",
            default=argparse.SUPPRESS,
            help="audit log of prompts: on, off, or comma-separated deployments",
        )

    fields(commands.add_parser("create", help="create a subscription; prints both keys once"))
    commands.add_parser("list", help="every subscription (never keys)")
    commands.add_parser("show", help="one subscription").add_argument("id")
    update = commands.add_parser("update", help="change name, state, limits, expiry or deployments")
    update.add_argument("id")
    fields(update)
    regenerate = commands.add_parser("regenerate", help="replace one key; prints it once")
    regenerate.add_argument("id")
    regenerate.add_argument("--key", choices=["primary", "secondary"], default="primary")
    commands.add_parser("delete", help="delete a subscription").add_argument("id")
    commands.add_parser("backends", help="breaker, throttle and probe state of every backend (--url only)")
    commands.add_parser("stats", help="an instance's storage and limit counters (--url only)")
    audit = commands.add_parser("audit", help="the admin audit trail, newest first")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--subscription", help="only this subscription id")
    promptlog = commands.add_parser("promptlog", help="a request's audit-log record, by its request id")
    promptlog.add_argument("request_id")
    promptlog.add_argument("--at", help="about when it was made (ISO 8601); default: now")
    promptlog.add_argument("--hours", help="how many hours back from --at to scan (default: GATEWAY_PROMPT_LOG's)")
    return parser


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON fields of the admin API, from the flags given (flags not given are left out)."""
    out: dict[str, Any] = {}
    for name in ("name", "state"):
        if getattr(args, name, None) is not None:
            out[name] = getattr(args, name)
    for name in ("tokens_per_minute", "requests_per_minute", "token_quota"):
        if hasattr(args, name):
            out[name] = getattr(args, name)
    if hasattr(args, "token_quota_period"):
        out["token_quota_period"] = None if args.token_quota_period == _NONE else args.token_quota_period
    if hasattr(args, "expires_at"):
        out["expires_at"] = None if args.expires_at.lower() == _NONE else args.expires_at
    if hasattr(args, "allowed_deployments"):
        out["allowed_deployments"] = [d.strip() for d in args.allowed_deployments.split(",") if d.strip()]
    if hasattr(args, "prompt_log"):
        value = args.prompt_log.strip()
        names = [d.strip() for d in value.split(",") if d.strip()]
        out["prompt_log"] = {"on": True, "off": False}.get(value.lower(), {"deployments": names})
    return out


def _audit_query(args: argparse.Namespace) -> str:
    from urllib.parse import urlencode  # noqa: PLC0415

    query = {"limit": getattr(args, "limit", 50)}
    if getattr(args, "subscription", None):
        query["subscription"] = args.subscription
    return "/audit?" + urlencode(query)


async def _over_http(args: argparse.Namespace) -> Any:
    import aiohttp  # noqa: PLC0415 - only this mode needs it

    if not args.admin_key:
        raise SystemExit("--admin-key (or GATEWAY_ADMIN_KEY) is required with --url")
    base = args.url.rstrip("/") + "/gateway/admin"
    one = f"/subscriptions/{getattr(args, 'id', '')}"
    routes: dict[str, tuple[str, str, Any]] = {
        "create": ("POST", "/subscriptions", _fields(args)),
        "list": ("GET", "/subscriptions", None),
        "show": ("GET", one, None),
        "update": ("PATCH", one, _fields(args)),
        "regenerate": ("POST", f"{one}/regenerate", {"key": getattr(args, "key", "")}),
        "delete": ("DELETE", one, None),
        "backends": ("GET", "/backends", None),
        "stats": ("GET", "/stats", None),
        "audit": ("GET", _audit_query(args), None),
        "promptlog": ("GET", _promptlog_path(args), None),
    }
    method, path, body = routes[args.command]
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base + path, json=body, headers={"x-admin-key": args.admin_key}) as response,
    ):
        text = await response.text()
        if response.status >= 400:
            raise SystemExit(f"{response.status}: {text}")
        return json.loads(text) if text else {"deleted": getattr(args, "id", None)}


def _promptlog_path(args: argparse.Namespace) -> str:
    from urllib.parse import quote, urlencode  # noqa: PLC0415

    query = {k: v for k, v in (("at", getattr(args, "at", None)), ("hours", getattr(args, "hours", None))) if v}
    path = f"/requests/{quote(getattr(args, 'request_id', ''), safe='')}"
    return f"{path}?{urlencode(query)}" if query else path


async def _promptlog_on_storage(args: argparse.Namespace) -> Any:
    """Find a record in the audit log's blobs, with the gateway's storage settings from the environment."""
    from shared.admin.http import lookup_window  # noqa: PLC0415 - keeps `--help` instant
    from shared.clock import SYSTEM_CLOCK  # noqa: PLC0415
    from shared.config import load_settings  # noqa: PLC0415
    from shared.errors import NotFound  # noqa: PLC0415
    from shared.promptlog.log import PromptLog  # noqa: PLC0415
    from shared.stores.factory import build_append_log  # noqa: PLC0415

    env = dict(os.environ)
    env.setdefault("GATEWAY_BACKENDS", _PLACEHOLDER_BACKENDS)
    settings = load_settings(env)
    store = build_append_log(settings)
    if store.kind == "embedded":
        raise SystemExit("No blob storage configured: an embedded audit log lives inside one gateway; use --url.")
    at, hours = lookup_window(args.at, args.hours)
    log = PromptLog(settings.prompt_log, store, SYSTEM_CLOCK, instance_id="cli")
    try:
        found = await log.find(args.request_id, at=at, hours=hours)
    finally:
        await store.close()
    if found is None:
        raise NotFound(f"No audit-log record of request {args.request_id}.", code="record_not_found")
    return found


def stores_from_environment(embedded_state: str) -> Stores:
    """The gateway's shared stores, from the storage settings in the environment (the operator's commands)."""
    from shared.config import load_settings  # noqa: PLC0415 - keeps `--help` instant
    from shared.stores.factory import build_stores  # noqa: PLC0415

    env = dict(os.environ)
    # Only the storage settings matter here; backends are the gateway's business, not the operator's.
    env.setdefault("GATEWAY_BACKENDS", _PLACEHOLDER_BACKENDS)
    settings = load_settings(env)
    if settings.storage is None:
        raise SystemExit(
            f"No storage configured (GATEWAY_STORAGE or GATEWAY_STORAGE__tableServiceUri): {embedded_state} "
            "inside one gateway process; reach it with --url."
        )
    return build_stores(settings)


async def _on_stores(args: argparse.Namespace) -> Any:
    from shared.admin.subscriptions import SubscriptionAdmin  # noqa: PLC0415 - keeps `--help` instant

    if args.command == "promptlog":
        return await _promptlog_on_storage(args)
    if args.command in ("backends", "stats"):
        raise SystemExit(f"'{args.command}' shows a running gateway's state: give its --url")
    from shared.admin.access import Actor  # noqa: PLC0415
    from shared.admin.audit import AuditTrail  # noqa: PLC0415
    from shared.clock import SYSTEM_CLOCK  # noqa: PLC0415

    stores = stores_from_environment("embedded subscriptions live")
    service = SubscriptionAdmin(stores.subscriptions)
    audit = AuditTrail(stores.audit, SYSTEM_CLOCK)
    actor = Actor(f"cli:{getpass.getuser()}")
    route = f"cli {args.command}"
    try:
        if args.command == "create":
            fields = _fields(args)
            created = await service.create(fields)
            await audit.record(actor, "create", route, str(created["id"]), fields)
            return created
        if args.command == "list":
            return {"data": await service.list()}
        if args.command == "show":
            shown = await service.show(args.id)
            sub = await stores.subscriptions.get(args.id)
            if sub is not None and sub.budget is not None:
                from shared.budgets.keeper import read_budget_status  # noqa: PLC0415

                shown["budget_status"] = await read_budget_status(
                    stores.counters, sub.id, sub.budget, SYSTEM_CLOCK.now()
                )
            return shown
        if args.command == "audit":
            return {"data": await audit.recent(args.limit, args.subscription)}
        if args.command == "update":
            fields = _fields(args)
            updated = await service.update(args.id, fields)
            await audit.record(actor, "update", route, args.id, fields)
            return updated
        if args.command == "regenerate":
            regenerated = await service.regenerate(args.id, args.key)
            await audit.record(actor, "regenerate", route, args.id, [f"{args.key}_key"])
            return regenerated
        await service.delete(args.id)
        await audit.record(actor, "delete", route, args.id)
        return {"deleted": args.id}
    finally:
        await stores.close()


def run_command(work: Coroutine[Any, Any, T]) -> T | int:
    """Run a command's coroutine; an error is printed (the OpenAI envelope, or the config problems) as an exit code."""
    try:
        return asyncio.run(work)
    except GatewayError as exc:
        print(json.dumps(exc.envelope()), file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = run_command(_over_http(args) if args.url else _on_stores(args))
    if isinstance(result, int):
        return result
    print(json.dumps(result, indent=2))
    if args.command in ("create", "regenerate"):
        print("Keys are shown this once: store them now.", file=sys.stderr)
    return 0


# --- usage reports ---------------------------------------------------------------------------

usage_doc = """The ledger's usage between two times, added up by subscription, deployment or backend.

On the ledger in storage (the same settings as the gateway), or with --url through a running gateway's admin API.
"""


def render_table(result: Mapping[str, Any]) -> str:
    """A report as aligned columns, a total line under them."""
    group_by = str(result["group_by"])
    headers = [group_by, *(["name"] if group_by == "subscription" else [])]
    headers += ["requests", "prompt", "completion", "total", "cached", "cost", "outcomes"]

    def line(item: Mapping[str, Any], label: str, name: str | None) -> list[str]:
        outcomes = ", ".join(f"{k} {v}" for k, v in item["requests_by_outcome"].items())
        cells = [label, *([name or ""] if name is not None else [])]
        return [
            *cells,
            f"{item['requests']:,}",
            f"{item['prompt_tokens']:,}",
            f"{item['completion_tokens']:,}",
            f"{item['total_tokens']:,}",
            f"{item['cached_tokens']:,}",
            f"{item['cost']:.4f}",
            outcomes,
        ]

    named = group_by == "subscription"
    body = [line(i, str(i[group_by]), str(i.get("subscription_name", "")) if named else None) for i in result["data"]]
    total = line(result["total"], "TOTAL", "" if named else None)
    widths = [max(len(row[c]) for row in [headers, *body, total]) for c in range(len(headers))]
    numeric = set(range(2 if named else 1, len(headers) - 1))

    def fmt(row: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in numeric else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    title = f"usage {result['from']} .. {result['to']} by {group_by}"
    return "\n".join([title, "", fmt(headers), rule, *(fmt(r) for r in body), rule, fmt(total)]) + "\n"


def _usage_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.admin usage", description=usage_doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running gateway (its admin API); default: the ledger in storage")
    parser.add_argument("--admin-key", default=os.environ.get("GATEWAY_ADMIN_KEY"), help="default: GATEWAY_ADMIN_KEY")
    parser.add_argument("--from", dest="start", help="ISO 8601 or epoch seconds (default: 24 hours before --to)")
    parser.add_argument("--to", dest="end", help="ISO 8601 or epoch seconds (default: now)")
    parser.add_argument("--group-by", choices=GROUPS, default="subscription")
    parser.add_argument("--subscription", help="only this subscription id")
    parser.add_argument("--json", action="store_true", help="the report as JSON instead of a table")
    return parser


async def _usage_over_http(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp  # noqa: PLC0415 - only this mode needs it

    if not args.admin_key:
        raise SystemExit("--admin-key (or GATEWAY_ADMIN_KEY) is required with --url")
    params = {"group_by": args.group_by}
    for name, value in (("from", args.start), ("to", args.end), ("subscription", args.subscription)):
        if value:
            params[name] = value
    url = args.url.rstrip("/") + "/gateway/admin/usage"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params=params, headers={"x-admin-key": args.admin_key}) as response,
    ):
        text = await response.text()
        if response.status >= 400:
            raise SystemExit(f"{response.status}: {text}")
        result: dict[str, Any] = json.loads(text)
        return result


async def _usage_on_store(args: argparse.Namespace) -> dict[str, Any]:
    from shared.admin.usage import report, time_range  # noqa: PLC0415 - keeps `--help` instant
    from shared.clock import SYSTEM_CLOCK  # noqa: PLC0415

    start, end = time_range(args.start, args.end, SYSTEM_CLOCK.now())
    stores = stores_from_environment("an embedded ledger lives")
    try:
        rows = await stores.ledger.rows(start, end, args.subscription)
    finally:
        await stores.close()
    return report(rows, start, end, args.group_by)


def usage_main(argv: list[str] | None = None) -> int:
    args = _usage_parser().parse_args(argv)
    result = run_command(_usage_over_http(args) if args.url else _usage_on_store(args))
    if isinstance(result, int):
        return result
    print(json.dumps(result, indent=2) if args.json else render_table(result), end="" if not args.json else "\n")
    return 0
