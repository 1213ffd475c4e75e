"""azd post-provision hook: local.settings.json for runs against the deployed resources, and the first subscription.

Runs after every `azd provision` (and `azd up`); both steps are safe to repeat:

- `local.settings.json` is written when it is missing, or when it is still
  exactly what this hook wrote last time (its SHA-256 is kept in the azd
  environment as GATEWAY_LOCAL_SETTINGS_SHA256). A file the developer edited
  is left alone, and the settings that differ are named.
- The first subscription is created once, with the admin CLI talking straight
  to the deployed Table Storage as the developer (which is what the
  deploying user's roles are for). Its id is kept in the azd environment as
  GATEWAY_FIRST_SUBSCRIPTION_ID; its keys are printed once and stored nowhere.
- Opt-in (`azd env set GATEWAY_ENTRA_APP true`): the gateway's Entra app
  registration, created once with `az` (app ID URI `api://<client id>`, app
  roles Gateway.Admin and Gateway.Reader, its service principal). Its tenant,
  app ID URI and client id go to the azd environment (GATEWAY_ENTRA_TENANT_ID,
  GATEWAY_APP_ID_URI, GATEWAY_APP_CLIENT_ID), which main.parameters.json maps
  to main.bicep: the next `azd provision` turns Entra ID on in the app.

Standard library only: it runs before anything is installed. The admin CLI runs
in the project's `.venv` (created from requirements.txt if missing).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "local.settings.json"
HASH_KEY = "GATEWAY_LOCAL_SETTINGS_SHA256"
SUBSCRIPTION_KEY = "GATEWAY_FIRST_SUBSCRIPTION_ID"

# Settings a local run needs that only the deployment knows (azd keeps main.bicep's outputs).
FROM_AZURE = (
    "GATEWAY_BACKENDS",
    "GATEWAY_CACHE",
    "GATEWAY_PRICES",
    "GATEWAY_STORAGE__tableServiceUri",
    "GATEWAY_COSMOS__accountEndpoint",
    "GATEWAY_COSMOS_DATABASE",
    "GATEWAY_COSMOS_CONTAINER",
)
# Locally the developer's own sign-in (DefaultAzureCredential) stands in for the managed
# identity, so no __credential / __clientId settings; the admin key stays in Key Vault.
LOCAL_ONLY = {
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "PYTHON_ENABLE_INIT_INDEXING": "1",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}
RETRYABLE = ("AuthorizationPermissionMismatch", "AuthorizationFailure", "403", "Forbidden")


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, text=True, check=False, **kwargs)  # noqa: S603 - a fixed argv of resolved paths, no shell


def _unquote_dotenv(value: str) -> str:
    """Undo the escaping `azd env get-values` applies inside double quotes."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    out, chars = [], iter(value[1:-1])
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append({"n": "\n", "r": "\r"}.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


def azd_values() -> dict[str, str]:
    """The azd environment's values; the process environment when azd is not on PATH (azd sets it for hooks)."""
    azd = shutil.which("azd")
    if azd is None:
        return dict(os.environ)
    proc = _run([azd, "env", "get-values"], capture_output=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit("postprovision: `azd env get-values` failed")
    values: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        name, sep, raw = line.partition("=")
        if sep and name.strip():
            values[name.strip()] = _unquote_dotenv(raw.strip())
    return values


def azd_set(name: str, value: str) -> None:
    azd = shutil.which("azd")
    if azd is not None:
        proc = _run([azd, "env", "set", name, value], capture_output=True)
        if proc.returncode != 0:
            print(f"WARNING: could not record {name} in the azd environment: {proc.stderr.strip()}")


def local_settings(values: dict[str, str]) -> dict[str, str]:
    settings = dict(LOCAL_ONLY)
    settings.update({name: values[name] for name in FROM_AZURE if values.get(name)})
    return settings


def render(settings: dict[str, str]) -> bytes:
    return (json.dumps({"IsEncrypted": False, "Values": settings}, indent=2) + "\n").encode()


def write_local_settings(values: dict[str, str]) -> dict[str, str]:
    settings = local_settings(values)
    content = render(settings)
    digest = hashlib.sha256(content).hexdigest()
    if SETTINGS.exists():
        current = SETTINGS.read_bytes()
        if hashlib.sha256(current).hexdigest() != values.get(HASH_KEY):
            try:
                existing = json.loads(current).get("Values", {})
            except (json.JSONDecodeError, AttributeError):
                existing = {}
            differ = sorted(k for k in settings if existing.get(k) != settings[k])
            print("local.settings.json was edited since azd wrote it, so it is left as it is.")
            if differ:
                print(f"  These settings differ from the deployment's: {', '.join(differ)}")
                print("  Delete the file and run `azd hooks run postprovision` to have it written again.")
            return settings
        if current == content:
            print("local.settings.json is up to date.")
            return settings
    SETTINGS.write_bytes(content)
    azd_set(HASH_KEY, digest)
    print("Wrote local.settings.json: `make run` now uses the deployed backends, tables and cache, as you.")
    return settings


def project_python() -> Path:
    """The project's virtual environment with the gateway's dependencies, created if missing."""
    env_dir = ROOT / ".venv"
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        print("Creating .venv for the admin CLI (pip install -r requirements.txt) ...")
        venv.EnvBuilder(with_pip=True).create(env_dir)
    probe = _run([str(python), "-c", "import azure.data.tables, azure.identity"], capture_output=True)
    if probe.returncode != 0:
        pip = _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", "requirements.txt"])
        if pip.returncode != 0:
            raise SystemExit("postprovision: pip install -r requirements.txt failed (above)")
    return python


def create_first_subscription(values: dict[str, str], settings: dict[str, str]) -> None:
    if values.get(SUBSCRIPTION_KEY):
        print(f"The first subscription exists already ({values[SUBSCRIPTION_KEY]}); not creating another.")
        return
    url = values.get("GATEWAY_URL", "<function URL>")
    if values.get("AZURE_GRANT_USER_ROLES", "true").lower() == "false":
        print(
            "AZURE_GRANT_USER_ROLES is false, so you cannot reach the gateway's tables from here. Create a "
            f"subscription through the admin API instead: POST {url}/gateway/admin/subscriptions (README: deploy)."
        )
        return
    name = values.get("GATEWAY_FIRST_SUBSCRIPTION_NAME") or "first"
    cmd = [str(project_python()), "-m", "shared.admin", "create", "--name", name]
    env = {**os.environ, **settings}
    env.pop("GATEWAY_ADMIN_KEY", None)
    # New role assignments take a few minutes to reach the data plane: retry while access is denied.
    for attempt in range(1, 11):
        proc = _run(cmd, cwd=ROOT, env=env, capture_output=True)
        if proc.returncode == 0:
            break
        denied = any(marker in proc.stderr for marker in RETRYABLE)
        if not denied or attempt == 10:
            sys.stderr.write(proc.stderr[-3000:])
            print(
                "\nWARNING: the first subscription was not created (above). Fix the cause, then run "
                "`azd hooks run postprovision` again; nothing else needs redoing."
            )
            return
        print(f"  Table Storage is not letting you in yet (new role assignments propagate); retry {attempt} of 9 ...")
        time.sleep(30)
    try:
        created = json.loads(proc.stdout)
    except json.JSONDecodeError:
        print(f"The admin CLI answered something other than JSON; its output, once:\n{proc.stdout}")
        return
    azd_set(SUBSCRIPTION_KEY, created["id"])
    chat = values.get("GATEWAY_CHAT_DEPLOYMENT", "gpt-4o-mini")
    print(
        f"""
Created subscription {created["id"]} ({name}). Its keys are shown this once and stored nowhere:
  primary key:   {created["primary_key"]}
  secondary key: {created["secondary_key"]}

Gateway: {url}   (after `azd deploy`, which `azd up` runs next)

  from openai import AzureOpenAI
  client = AzureOpenAI(azure_endpoint="{url}", api_key="<primary key>", api_version="2024-10-21")
  client.chat.completions.create(model="{chat}", messages=[{{"role": "user", "content": "Hello!"}}])
"""
    )


APP_ROLES = (
    ("Gateway.Admin", "Gateway admin", "Manage the gateway's subscriptions through its admin API."),
    ("Gateway.Reader", "Gateway reader", "Read the gateway's subscriptions, usage and audit trail."),
)


def create_app_registration(values: dict[str, str]) -> None:
    """The gateway's Entra app registration, once, when GATEWAY_ENTRA_APP is true (needs `az login`)."""
    if values.get("GATEWAY_ENTRA_APP", "").lower() != "true":
        return
    if values.get("GATEWAY_APP_CLIENT_ID"):
        print(f"The gateway's app registration exists already ({values['GATEWAY_APP_CLIENT_ID']}).")
        return
    az = shutil.which("az")
    if az is None:
        print("GATEWAY_ENTRA_APP is true but the Azure CLI (az) is not on PATH: the app registration is not created.")
        return
    name = f"aoai-gateway-{values.get('AZURE_ENV_NAME', 'env')}"
    roles = [
        {
            "allowedMemberTypes": ["User", "Application"],
            "description": description,
            "displayName": display,
            "id": str(uuid.uuid4()),
            "isEnabled": True,
            "value": value,
        }
        for value, display, description in APP_ROLES
    ]
    roles_file = ROOT / ".azure" / "gateway-app-roles.json"
    roles_file.parent.mkdir(exist_ok=True)
    roles_file.write_text(json.dumps(roles))
    created = _run(
        [az, "ad", "app", "create", "--display-name", name, "--sign-in-audience", "AzureADMyOrg",
         "--app-roles", f"@{roles_file}", "--query", "appId", "-o", "tsv"],
        capture_output=True,
    )  # fmt: skip
    client_id = created.stdout.strip()
    if created.returncode != 0 or not client_id:
        sys.stderr.write(created.stderr[-2000:])
        print("WARNING: the app registration was not created (above); fix the cause and run the hook again.")
        return
    app_id_uri = f"api://{client_id}"
    for step in (
        [az, "ad", "app", "update", "--id", client_id, "--identifier-uris", app_id_uri],
        [az, "ad", "sp", "create", "--id", client_id],
    ):
        done = _run(step, capture_output=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-2000:])
            print(f"WARNING: `{' '.join(step[1:4])}` failed for app {client_id} (above); finish it by hand.")
            return
    tenant = values.get("AZURE_TENANT_ID", "")
    azd_set("GATEWAY_APP_CLIENT_ID", client_id)
    azd_set("GATEWAY_APP_ID_URI", app_id_uri)
    if tenant:
        azd_set("GATEWAY_ENTRA_TENANT_ID", tenant)
    print(
        f"""
Created the gateway's app registration {name}: client id {client_id}, app ID URI {app_id_uri},
app roles Gateway.Admin and Gateway.Reader. Run `azd provision` once more to turn Entra ID on in the app.
Callers then use azure_ad_token_provider=get_bearer_token_provider(credential, "{app_id_uri}/.default"),
and a subscription lists their object ids in `identities` (README: Entra ID).
"""
    )


def main() -> int:
    os.chdir(ROOT)
    values = azd_values()
    settings = write_local_settings(values)
    create_first_subscription(values, settings)
    create_app_registration(values)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
