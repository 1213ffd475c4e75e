"""`make infra-scan`: checkov over the Bicep in `infra/` (or a directory given), in its own venv; any finding fails.

checkov pins versions that conflict with the gateway's, so it lives in
`.venv-tools` (created and filled on first use, reused after). A failed check,
a skip without a reason, or a Bicep file checkov could not parse fails the
scan: checkov's own exit code ignores parse errors, and a file it cannot parse
is a file it did not check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
TOOLS = ROOT / ".venv-tools"
CHECKOV = "checkov==3.3.30"
STAMP = TOOLS / ".checkov-installed"
NO_REASON = "No comment provided"  # what checkov reports for a skip comment without a reason

# checkov bundles its own (older) Bicep parser; this asks that very parser about each file.
_PARSE_ALL = """
import json, sys
from pathlib import Path
from pycep import BicepParser
parser = BicepParser()
errors = {}
for name in sys.argv[1:]:
    try:
        parser.parse(file_path=Path(name))
    except Exception as exc:
        errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
print(json.dumps(errors))
"""


def _tools_python() -> Path:
    return TOOLS / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _tools_checkov() -> Path:
    return TOOLS / ("Scripts/checkov.cmd" if os.name == "nt" else "bin/checkov")


def ensure_tools() -> bool:
    """Create `.venv-tools` with the pinned checkov unless it is there already; True if installed now."""
    if STAMP.is_file() and STAMP.read_text().strip() == CHECKOV and _tools_checkov().exists():
        return False
    if not _tools_python().exists():
        venv.EnvBuilder(with_pip=True, clear=False).create(TOOLS)
    install = subprocess.run(
        [str(_tools_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q", CHECKOV],
        capture_output=True,
        text=True,
        check=False,
    )
    if install.returncode != 0:
        sys.stderr.write(install.stdout + install.stderr)
        raise SystemExit(f"infra-scan: could not install {CHECKOV} into {TOOLS.name}")
    STAMP.write_text(CHECKOV + "\n")
    return True


def run_checkov(infra: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "BC_SKIP_MAPPING": "TRUE",  # no download of the Bridgecrew id mapping (offline)
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE",
        "LOG_LEVEL": "ERROR",
    }
    cmd = [
        str(_tools_checkov()),
        "-d",
        str(infra),
        "--framework",
        "bicep",
        "--skip-download",
        "--compact",
        "-o",
        "json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"infra-scan: checkov gave no JSON report (exit code {proc.returncode})") from None
    # One framework gives one report object; with nothing to scan checkov answers a bare summary.
    if isinstance(report, list):
        report = next((r for r in report if r.get("check_type") == "bicep"), {})
    if "results" not in report:
        raise SystemExit("infra-scan: checkov found no Bicep to scan")
    return dict(report)


def unparsable(files: list[Path]) -> dict[str, str]:
    proc = subprocess.run(
        [str(_tools_python()), "-c", _PARSE_ALL, *map(str, files)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"infra-scan: could not run checkov's Bicep parser: {proc.stderr.strip()[-500:]}")
    return dict(json.loads(proc.stdout))


def _where(check: dict[str, Any]) -> str:
    lines = check.get("file_line_range") or [0, 0]
    return f"{check['file_path'].lstrip('/')}:{lines[0]} {check['resource']}"


def main(argv: list[str]) -> int:
    infra = Path(argv[0]).resolve() if argv else INFRA
    started = time.monotonic()
    installed = ensure_tools()
    files = sorted(infra.rglob("*.bicep"))
    report = run_checkov(infra)
    results, summary = report["results"], report.get("summary", {})
    failed = results.get("failed_checks", [])
    skipped = results.get("skipped_checks", [])
    parse_errors = {
        str(Path(p).resolve()): "checkov reported a parsing error" for p in results.get("parsing_errors", [])
    }
    parse_errors.update({str(Path(p).resolve()): why for p, why in unparsable(files).items()})
    unexplained = [s for s in skipped if (s.get("check_result") or {}).get("suppress_comment", NO_REASON) == NO_REASON]

    print(
        f"checkov {summary.get('checkov_version', '?')} on {len(files)} Bicep files: "
        f"{summary.get('passed', 0)} passed, {len(failed)} failed, {len(skipped)} skipped, "
        f"{len(parse_errors)} not parsed ({time.monotonic() - started:.1f} s"
        f"{', tools installed' if installed else ''})"
    )
    for check in failed:
        print(f"  FAILED  {check['check_id']}  {_where(check)}: {check['check_name']}")
    by_file: dict[str, list[str]] = {}
    for check in skipped:
        by_file.setdefault(check["file_path"].lstrip("/"), []).append(check["check_id"])
    for path, ids in sorted(by_file.items()):
        print(f"  skipped in {path} (reason beside each): {', '.join(sorted(set(ids)))}")
    for check in unexplained:
        print(f"  NO REASON for skipping {check['check_id']} at {_where(check)}: write // checkov:skip=ID:reason")
    for path, why in sorted(parse_errors.items()):
        print(f"  NOT PARSED  {os.path.relpath(path, ROOT)}: {why}")
    return 1 if failed or unexplained or parse_errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
