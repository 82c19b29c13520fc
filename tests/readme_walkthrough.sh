#!/usr/bin/env bash
# Runs the grpcurl walkthrough of the README against a real expd.
#
# Usage: tests/readme_walkthrough.sh [path/to/expd] [path/to/README.md]
#   (defaults: target/debug/expd and README.md under the repository root)
#
# Takes every ```sh block between the lines `<!-- walkthrough:begin -->` and
# `<!-- walkthrough:end -->` of the README, starts expd with a temporary data
# directory on the walkthrough's default addresses (gRPC 127.0.0.1:50051,
# HTTP 127.0.0.1:8080; refuses to run if either is busy), and runs the blocks
# in order, each with `bash -e -o pipefail`, so that every command must
# succeed. Prints "ok - ..." per block and "N passed, M failed".
# VERBOSE=1 also prints each block's output.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
EXPD=${1:-$REPO_ROOT/target/debug/expd}
README=${2:-$REPO_ROOT/README.md}
case $EXPD in /*) ;; *) EXPD=$PWD/$EXPD ;; esac
case $README in /*) ;; *) README=$PWD/$README ;; esac

GRPC_HOST=127.0.0.1
GRPC_PORT=50051
HTTP_PORT=8080
ADDR=$GRPC_HOST:$GRPC_PORT

for tool in grpcurl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is not on PATH" >&2; exit 2; }
done
[[ -x $EXPD ]] || { echo "error: expd binary not found or not executable: $EXPD" >&2; exit 2; }
[[ -f $README ]] || { echo "error: README not found: $README" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/expd-readme-walkthrough.XXXXXX")
EXPD_PID=

stop_expd() {
  [[ -n $EXPD_PID ]] || return 0
  kill -TERM "$EXPD_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$EXPD_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$EXPD_PID" 2>/dev/null; then
    kill -KILL "$EXPD_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$EXPD_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  EXPD_PID=
}

cleanup() {
  local rc=$?
  stop_expd
  if [[ $rc -eq 0 || ! -e $WORK/expd.log ]]; then
    rm -rf "$WORK"
  else
    echo "# logs and data kept in $WORK" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- extract the blocks ---------------------------------------------------------
# Writes $WORK/blocks/NNN.sh per block and prints "NNN<TAB>line" per block.
mkdir -p "$WORK/blocks"
BLOCK_LIST=$(python3 - "$README" "$WORK/blocks" <<'PY'
import os, re, sys

readme, out_dir = sys.argv[1], sys.argv[2]
with open(readme, encoding="utf-8") as f:
    lines = f.read().split("\n")

def die(msg):
    print("error: %s: %s" % (readme, msg), file=sys.stderr)
    sys.exit(1)

begins = [i for i, l in enumerate(lines) if l.strip() == "<!-- walkthrough:begin -->"]
ends = [i for i, l in enumerate(lines) if l.strip() == "<!-- walkthrough:end -->"]
if len(begins) != 1 or len(ends) != 1:
    die("expected exactly one '<!-- walkthrough:begin -->' and one "
        "'<!-- walkthrough:end -->' line, found %d and %d" % (len(begins), len(ends)))
begin, end = begins[0], ends[0]
if end < begin:
    die("'<!-- walkthrough:end -->' comes before '<!-- walkthrough:begin -->'")

n = 0
i = begin + 1
while i < end:
    m = re.match(r"^(\s*)(`{3,})\s*sh\s*$", lines[i])
    if not m:
        i += 1
        continue
    indent, fence = m.group(1), m.group(2)
    start = i + 1
    j = start
    while j < end and not re.match(r"^\s*" + fence + r"\s*$", lines[j]):
        j += 1
    if j >= end:
        die("the ```sh block at line %d is not closed before the end marker" % (i + 1))
    body = [l[len(indent):] if l.startswith(indent) else l for l in lines[start:j]]
    n += 1
    with open(os.path.join(out_dir, "%03d.sh" % n), "w", encoding="utf-8") as f:
        f.write("\n".join(body) + "\n")
    print("%03d\t%d" % (n, i + 1))
    i = j + 1
if n == 0:
    die("no ```sh block between the walkthrough markers")
PY
)

# --- start expd on the default addresses ------------------------------------------
for port in "$GRPC_PORT" "$HTTP_PORT"; do
  if ! python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
    echo "error: 127.0.0.1:$port is busy (is another expd running?); the walkthrough needs gRPC on $ADDR and HTTP on 127.0.0.1:$HTTP_PORT" >&2
    exit 1
  fi
done

mkdir -p "$WORK/run"
LOG=$WORK/expd.log
(cd "$WORK/run" && exec "$EXPD" --data-dir "$WORK/data" --grpc-addr "$ADDR" \
  --http-addr "$GRPC_HOST:$HTTP_PORT") >"$LOG" 2>&1 &
EXPD_PID=$!
disown "$EXPD_PID"
ready=
for _ in $(seq 1 150); do
  if ! kill -0 "$EXPD_PID" 2>/dev/null; then
    echo "error: expd exited during start-up; its log:" >&2
    cat "$LOG" >&2
    EXPD_PID=
    exit 1
  fi
  if grpcurl -plaintext -connect-timeout 1 "$ADDR" list >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
if [[ -z $ready ]]; then
  echo "error: expd did not answer 'grpcurl -plaintext $ADDR list' within 30s; its log:" >&2
  cat "$LOG" >&2
  exit 1
fi
echo "# expd listening on $ADDR (data dir $WORK/data)"
echo "# README: $README"

# --- run the blocks --------------------------------------------------------------
PASSED=0
FAILED=0
while IFS=$'\t' read -r n line; do
  block=$WORK/blocks/$n.sh
  title=$(grep -m1 -v '^\s*\(#.*\)\?$' "$block" | sed 's/[[:space:]]*\\$//' | cut -c1-100)
  set +e
  (cd "$WORK/run" && bash -e -o pipefail "$block") >"$WORK/blocks/$n.out" 2>&1
  rc=$?
  set -e
  if [[ $rc -eq 0 ]]; then
    PASSED=$((PASSED + 1))
    echo "ok - block $((10#$n)) (README line $line): $title"
    if [[ -n ${VERBOSE:-} ]]; then sed 's/^/#   /' "$WORK/blocks/$n.out"; fi
  else
    FAILED=$((FAILED + 1))
    echo "not ok - block $((10#$n)) (README line $line) exited with $rc"
    echo "#   block:"
    sed 's/^/#     /' "$block"
    echo "#   output:"
    sed 's/^/#     /' "$WORK/blocks/$n.out"
    echo "#   last lines of the expd log:"
    tail -n 20 "$LOG" | sed 's/^/#     /'
    echo "$PASSED passed, $FAILED failed"
    exit 1
  fi
done <<<"$BLOCK_LIST"

stop_expd
echo "$PASSED passed, $FAILED failed"
