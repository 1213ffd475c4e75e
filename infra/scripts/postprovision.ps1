# azd post-provision hook (Windows): runs postprovision.py with the project's Python.
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..\..')
$python = '.venv\Scripts\python.exe'
if (-not (Test-Path $python)) {
    $python = if (Get-Command py -ErrorAction SilentlyContinue) { 'py' } else { 'python' }
}
& $python infra/scripts/postprovision.py
exit $LASTEXITCODE
