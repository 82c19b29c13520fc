#!/usr/bin/env bash
# End-to-end test of expd through grpcurl alone.
#
# Usage: tests/grpcurl_e2e.sh [path/to/expd]
#   (default: target/debug/expd under the repository root)
#
# Starts expd on free loopback ports with a temporary data directory, drives
# the AdminService (and health, reflection) with grpcurl, and asserts on the
# output. Prints "ok - ..." per check and "N passed, M failed" at the end;
# exits 1 on the first failure. Needs grpcurl and python3 on PATH.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
EXPD=${1:-$REPO_ROOT/target/debug/expd}
case $EXPD in /*) ;; *) EXPD=$PWD/$EXPD ;; esac

for tool in grpcurl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is not on PATH" >&2; exit 2; }
done
[[ -x $EXPD ]] || { echo "error: expd binary not found or not executable: $EXPD" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/expd-grpcurl-e2e.XXXXXX")
DATA_DIR=$WORK/data
EXPD_PID=
ADDR=
START_COUNT=0
PASSED=0
FAILED=0

ADMIN=experiments.v1.AdminService
EDITOR_TOKEN=e2e-editor-token-0123456789
VIEWER_TOKEN=e2e-viewer-token-0123456789
EDITOR_ID=alice@example.com
VIEWER_ID=bob@example.com

cleanup() {
  local rc=$?
  if [[ -n $EXPD_PID ]] && kill -0 "$EXPD_PID" 2>/dev/null; then
    stop_expd TERM
  fi
  if [[ $rc -eq 0 ]]; then
    rm -rf "$WORK"
  else
    echo "# logs and data kept in $WORK" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_expd [extra expd args...]: starts expd on fresh free ports over
# $DATA_DIR and waits until reflection answers.
start_expd() {
  START_COUNT=$((START_COUNT + 1))
  local grpc_port http_port log
  grpc_port=$(free_port)
  http_port=$(free_port)
  while [[ $http_port == "$grpc_port" ]]; do http_port=$(free_port); done
  ADDR=127.0.0.1:$grpc_port
  log=$WORK/expd.$START_COUNT.log
  EXPD_LOG=$log
  "$EXPD" --data-dir "$DATA_DIR" --grpc-addr "$ADDR" --http-addr "127.0.0.1:$http_port" "$@" \
    >"$log" 2>&1 &
  EXPD_PID=$!
  # No job-status noise ("Killed") when it is killed; stop_expd polls it.
  disown "$EXPD_PID"
  for _ in $(seq 1 150); do
    if ! kill -0 "$EXPD_PID" 2>/dev/null; then
      echo "error: expd exited during start-up; its log:" >&2
      cat "$log" >&2
      EXPD_PID=
      exit 1
    fi
    if grpcurl -plaintext -connect-timeout 1 "$ADDR" list >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  echo "error: expd did not answer 'grpcurl list' on $ADDR within 30s; its log:" >&2
  cat "$log" >&2
  exit 1
}

# stop_expd [SIGNAL]: stops expd (SIGTERM by default) and waits for it.
stop_expd() {
  local sig=${1:-TERM}
  [[ -n $EXPD_PID ]] || return 0
  kill "-$sig" "$EXPD_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$EXPD_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$EXPD_PID" 2>/dev/null; then
    echo "# expd did not stop on SIG$sig within 15s; sending SIGKILL" >&2
    kill -KILL "$EXPD_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$EXPD_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  EXPD_PID=
}

# rpc METHOD JSON [grpcurl options...]: calls METHOD (a full method name, or
# an AdminService method name) and sets OUT (stdout), ERR (stderr), RC and
# CMD. Never fails by itself.
rpc() {
  local method=$1 data=$2
  shift 2
  [[ $method == */* ]] || method=$ADMIN/$method
  CMD="grpcurl -plaintext $* -d '$data' $ADDR $method"
  set +e
  grpcurl -plaintext "$@" -d "$data" "$ADDR" "$method" >"$WORK/out" 2>"$WORK/err"
  RC=$?
  set -e
  OUT=$(cat "$WORK/out")
  ERR=$(cat "$WORK/err")
}

pass() {
  PASSED=$((PASSED + 1))
  echo "ok - $1"
}

fail() {
  FAILED=$((FAILED + 1))
  echo "not ok - $1"
  [[ -n ${2:-} ]] && echo "#   reason: $2"
  echo "#   command: ${CMD:-}"
  echo "#   exit code: ${RC:-}"
  echo "#   stdout:"
  printf '%s\n' "${OUT:-}" | sed 's/^/#     /'
  echo "#   stderr:"
  printf '%s\n' "${ERR:-}" | sed 's/^/#     /'
  if [[ -n ${EXPD_LOG:-} && -f $EXPD_LOG ]]; then
    echo "#   last lines of the expd log ($EXPD_LOG):"
    tail -n 20 "$EXPD_LOG" | sed 's/^/#     /'
  fi
  echo "$PASSED passed, $FAILED failed"
  stop_expd
  exit 1
}

# Python evaluating an expression over the response JSON `d` (stdin).
PY_EVAL='
import json, sys
d = json.load(sys.stdin)
e = d.get("experiment") or {}
def ids(resp): return [x.get("id") for x in resp.get("experiments", [])]
def rev(x): return int(x.get("revision", 0))
def params(x, i): return (x.get("variants") or [])[i].get("params") or {}
try:
    ok = eval(sys.argv[1])
except Exception as ex:
    print("exception: %r" % (ex,), file=sys.stderr)
    sys.exit(1)
sys.exit(0 if ok else 1)
'

# expect_ok DESC PY_EXPR: the last rpc succeeded and PY_EXPR holds over its
# JSON response.
expect_ok() {
  local desc=$1 expr=$2 why
  [[ $RC -eq 0 ]] || fail "$desc" "grpcurl exited with $RC, expected success"
  if ! why=$(printf '%s' "$OUT" | python3 -c "$PY_EVAL" "$expr" 2>&1); then
    fail "$desc" "assertion failed: $expr ${why}"
  fi
  pass "$desc"
}

# expect_err DESC CODE [SUBSTRING...]: the last rpc failed with CODE and its
# message contains every SUBSTRING.
expect_err() {
  local desc=$1 code=$2 s
  shift 2
  [[ $RC -ne 0 ]] || fail "$desc" "expected Code: $code, but the call succeeded"
  grep -q "^  Code: $code\$" <<<"$ERR" || fail "$desc" "expected Code: $code"
  for s in "$@"; do
    grep -qF -- "$s" <<<"$ERR" || fail "$desc" "message does not contain: $s"
  done
  pass "$desc"
}

# ---------------------------------------------------------------------------

SEED=$(cat <<'EOF'
{
  "id": "reco_ymal_v1",
  "name": "You may also like: re-rank with price and style",
  "description": "Re-rank YMAL candidates by price and style similarity",
  "hypothesis": "Weighting style at 0.6 raises add-to-cart rate on PDP by 2%",
  "owner": "reco-team@example.com",
  "eligibility": {"placements": ["you_may_also_like"]},
  "variants": [
    {"name": "control", "weight": 50, "params": {"model_version": "v2"}},
    {"name": "treatment", "weight": 50,
     "params": {"model_version": "v3", "rerank_weight_price": 0.2, "rerank_weight_style": 0.6}}
  ],
  "control_variant": "control",
  "traffic_percent": 10
}
EOF
)

BAD=$(cat <<'EOF'
{
  "id": "Bad Id",
  "name": "Broken experiment",
  "hypothesis": "none",
  "owner": "reco-team@example.com",
  "eligibility": {"placements": ["you_may_also_like"]},
  "variants": [
    {"name": "control", "weight": 50, "params": {"model_version": "v2"}},
    {"name": "treatment", "weight": 40, "params": {"model_version": "v3", "rerank_weight_price": 1.5}}
  ],
  "control_variant": "baseline",
  "traffic_percent": 150
}
EOF
)

SECOND=$(cat <<'EOF'
{
  "id": "pdp_carousel_v1",
  "name": "PDP carousel: larger thumbnails",
  "hypothesis": "Larger thumbnails raise CTR",
  "owner": "pdp-team@example.com",
  "eligibility": {"placements": ["pdp_carousel"]},
  "variants": [
    {"name": "control", "weight": 50},
    {"name": "big_thumbs", "weight": 50}
  ],
  "control_variant": "control",
  "traffic_percent": 5
}
EOF
)

echo "# expd: $EXPD"
start_expd
echo "# expd listening on $ADDR (data dir $DATA_DIR)"

# --- reflection and health ---------------------------------------------------
CMD="grpcurl -plaintext $ADDR list"
set +e; OUT=$(grpcurl -plaintext "$ADDR" list 2>"$WORK/err"); RC=$?; set -e; ERR=$(cat "$WORK/err")
[[ $RC -eq 0 ]] || fail "list answers" "grpcurl list exited with $RC"
for svc in experiments.v1.AdminService experiments.v1.AssignmentService experiments.v1.ConfigService \
           experiments.v1.EventService experiments.v1.ResultsService grpc.health.v1.Health; do
  grep -qx "$svc" <<<"$OUT" || fail "list shows $svc" "service $svc missing"
done
grep -qE '^grpc\.reflection\.v1(alpha)?\.ServerReflection$' <<<"$OUT" || fail "list shows reflection" "no grpc.reflection service"
pass "list shows the five experiments.v1 services, grpc.health.v1.Health and grpc.reflection"

rpc grpc.health.v1.Health/Check '{}'
expect_ok "Health/Check answers SERVING" 'd.get("status") == "SERVING"'

# --- create / get / list -------------------------------------------------------
rpc CreateExperiment "{\"experiment\": $SEED, \"reason\": \"Q4 YMAL re-ranking test\"}"
expect_ok "CreateExperiment reco_ymal_v1 -> revision 1, DRAFT" \
  'e["id"] == "reco_ymal_v1" and rev(e) == 1 and e["status"] == "EXPERIMENT_STATUS_DRAFT" and e.get("trafficPercent") == 10 and e.get("updatedBy") == "anonymous" and e["eligibility"]["placements"] == ["you_may_also_like"]'

rpc GetExperiment '{"id": "reco_ymal_v1"}'
expect_ok "GetExperiment returns revision 1 with the variant params" \
  'rev(e) == 1 and e["controlVariant"] == "control" and [v["name"] for v in e["variants"]] == ["control", "treatment"] and [v["weight"] for v in e["variants"]] == [50, 50] and params(e, 0) == {"model_version": "v2"} and params(e, 1) == {"model_version": "v3", "rerank_weight_price": 0.2, "rerank_weight_style": 0.6}'

rpc CreateExperiment "{\"experiment\": $SEED}"
expect_err "CreateExperiment with a taken id -> AlreadyExists" AlreadyExists reco_ymal_v1

rpc ListExperiments '{"placement": "you_may_also_like"}'
expect_ok "ListExperiments placement=you_may_also_like finds it" 'ids(d) == ["reco_ymal_v1"]'

rpc ListExperiments '{"owner": "reco-team@example.com"}'
expect_ok "ListExperiments owner=reco-team@example.com finds it" 'ids(d) == ["reco_ymal_v1"]'

rpc ListExperiments '{"owner": "nobody@example.com"}'
expect_ok "ListExperiments with an owner that matches nothing is empty" 'ids(d) == []'

rpc ListExperiments '{"placement": "no_such_placement"}'
expect_ok "ListExperiments with a placement that matches nothing is empty" 'ids(d) == []'

# --- update and optimistic concurrency ----------------------------------------
rpc UpdateExperiment '{"experiment": {"id": "reco_ymal_v1", "revision": 1, "name": "YMAL: re-rank v1"}, "update_mask": {"paths": ["name"]}, "reason": "rename"}'
expect_ok "UpdateExperiment name at revision 1 -> revision 2" \
  'rev(e) == 2 and e["name"] == "YMAL: re-rank v1" and e.get("trafficPercent") == 10 and len(e["variants"]) == 2'

rpc UpdateExperiment '{"experiment": {"id": "reco_ymal_v1", "revision": 1, "name": "stale edit"}, "update_mask": {"paths": ["name"]}}'
expect_err "UpdateExperiment with stale revision 1 -> Aborted" Aborted

# --- validation ---------------------------------------------------------------
rpc ValidateExperiment "{\"experiment\": $BAD}"
expect_ok "ValidateExperiment of a bad experiment -> not valid, a violation per field" \
  'not d.get("valid", False) and {"id", "variants", "control_variant", "variants[1].params.rerank_weight_price", "traffic_percent"} <= {v["field"] for v in d.get("violations", [])}'

rpc CreateExperiment "{\"experiment\": $BAD}"
expect_err "CreateExperiment of the bad experiment -> InvalidArgument naming every path" InvalidArgument \
  "id:" "variants:" "control_variant:" "variants[1].params.rerank_weight_price:" "traffic_percent:"
expect_err "the refusal carries google.rpc.BadRequest details grpcurl decodes" InvalidArgument \
  '"@type":"type.googleapis.com/google.rpc.BadRequest"' '"field":"variants[1].params.rerank_weight_price"'

# --- lifecycle ------------------------------------------------------------------
rpc StartExperiment '{"id": "reco_ymal_v1", "reason": "launch after QA sign-off"}'
expect_ok "StartExperiment -> RUNNING" 'e["status"] == "EXPERIMENT_STATUS_RUNNING" and rev(e) == 3'

rpc PauseExperiment '{"id": "reco_ymal_v1", "reason": "investigating latency"}'
expect_ok "PauseExperiment -> PAUSED" 'e["status"] == "EXPERIMENT_STATUS_PAUSED" and rev(e) == 4'

rpc ResumeExperiment '{"id": "reco_ymal_v1", "reason": "latency fixed"}'
expect_ok "ResumeExperiment -> RUNNING" 'e["status"] == "EXPERIMENT_STATUS_RUNNING" and rev(e) == 5'

rpc ResumeExperiment '{"id": "reco_ymal_v1"}'
expect_err "ResumeExperiment while RUNNING -> FailedPrecondition" FailedPrecondition

rpc GetExperiment '{"id": "reco_ymal_v1"}'
CUR=$(printf '%s' "$OUT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["experiment"]["revision"])')
rpc UpdateExperiment "{\"experiment\": {\"id\": \"reco_ymal_v1\", \"revision\": $CUR, \"traffic_percent\": 50}, \"update_mask\": {\"paths\": [\"traffic_percent\"]}, \"reason\": \"ramp to 50%\"}"
expect_ok "UpdateExperiment traffic_percent 50 at the current revision ($CUR) while RUNNING (ramp)" \
  "rev(e) == $CUR + 1 and e.get('trafficPercent') == 50 and e['status'] == 'EXPERIMENT_STATUS_RUNNING'"

# --- revisions and rollback ---------------------------------------------------
rpc ListExperimentRevisions '{"id": "reco_ymal_v1"}'
expect_ok "ListExperimentRevisions: 6 revisions newest first, with actions, author anonymous" \
  '[int(r["revision"]) for r in d["revisions"]] == [6, 5, 4, 3, 2, 1] and [r["action"] for r in d["revisions"]] == ["REVISION_ACTION_UPDATE", "REVISION_ACTION_RESUME", "REVISION_ACTION_PAUSE", "REVISION_ACTION_START", "REVISION_ACTION_UPDATE", "REVISION_ACTION_CREATE"] and all(r.get("author") == "anonymous" for r in d["revisions"]) and d["revisions"][0].get("reason") == "ramp to 50%"'
TO_REV=$(printf '%s' "$OUT" | python3 -c 'import json,sys; print(next(r["revision"] for r in json.load(sys.stdin)["revisions"] if r["experiment"].get("trafficPercent") == 10))')

rpc RollbackExperiment "{\"id\": \"reco_ymal_v1\", \"to_revision\": $TO_REV, \"revision\": 6, \"reason\": \"50% ramp raised page load time\"}"
expect_ok "RollbackExperiment to revision $TO_REV (traffic 10) -> revision 7, traffic 10, still RUNNING" \
  'rev(e) == 7 and e.get("trafficPercent") == 10 and e["status"] == "EXPERIMENT_STATUS_RUNNING"'

rpc ListExperimentRevisions '{"id": "reco_ymal_v1"}'
expect_ok "ListExperimentRevisions shows revision 7 as REVISION_ACTION_ROLLBACK to $TO_REV" \
  "len(d['revisions']) == 7 and int(d['revisions'][0]['revision']) == 7 and d['revisions'][0]['action'] == 'REVISION_ACTION_ROLLBACK' and int(d['revisions'][0].get('rolledBackTo', 0)) == $TO_REV and d['revisions'][0]['experiment'].get('trafficPercent') == 10"

# --- QA overrides -------------------------------------------------------------
OVERRIDE_KEY='"experiment_id": "reco_ymal_v1", "unit_type": "UNIT_TYPE_USER", "unit_id": "qa-user-1"'
rpc SetOverride "{\"qa_override\": {$OVERRIDE_KEY, \"variant\": \"treatment\", \"reason\": \"QA of the re-ranker\"}}"
expect_ok "SetOverride qa-user-1 -> treatment" \
  'd["qaOverride"]["variant"] == "treatment" and d["qaOverride"]["unitId"] == "qa-user-1" and d["qaOverride"].get("createdBy") == "anonymous"'

rpc ListOverrides '{"experiment_id": "reco_ymal_v1"}'
expect_ok "ListOverrides shows it" \
  '[(o["experimentId"], o["unitType"], o["unitId"], o["variant"]) for o in d.get("qaOverrides", [])] == [("reco_ymal_v1", "UNIT_TYPE_USER", "qa-user-1", "treatment")]'

rpc SetOverride "{\"qa_override\": {$OVERRIDE_KEY, \"variant\": \"no_such_variant\"}}"
expect_err "SetOverride with an unknown variant -> InvalidArgument naming qa_override.variant" InvalidArgument qa_override.variant

rpc DeleteOverride "{$OVERRIDE_KEY}"
expect_ok "DeleteOverride" 'True'

rpc ListOverrides '{"experiment_id": "reco_ymal_v1"}'
expect_ok "ListOverrides is empty after the delete" 'd.get("qaOverrides", []) == []'

rpc DeleteOverride "{$OVERRIDE_KEY}"
expect_err "DeleteOverride again -> NotFound" NotFound

# --- stop / archive -----------------------------------------------------------
rpc StopExperiment '{"id": "reco_ymal_v1", "reason": "treatment wins: +2.1% ATC", "ship_variant": "treatment"}'
expect_ok "StopExperiment shipping treatment -> STOPPED with shipped_variant" \
  'e["status"] == "EXPERIMENT_STATUS_STOPPED" and e.get("shippedVariant") == "treatment" and e.get("statusReason") == "treatment wins: +2.1% ATC"'

rpc ArchiveExperiment '{"id": "reco_ymal_v1", "reason": "results published"}'
expect_ok "ArchiveExperiment -> ARCHIVED" 'e["status"] == "EXPERIMENT_STATUS_ARCHIVED"'
ARCHIVED_REV=$(printf '%s' "$OUT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["experiment"]["revision"])')

rpc UpdateExperiment "{\"experiment\": {\"id\": \"reco_ymal_v1\", \"revision\": $ARCHIVED_REV, \"name\": \"too late\"}, \"update_mask\": {\"paths\": [\"name\"]}}"
expect_err "UpdateExperiment on an archived experiment -> FailedPrecondition" FailedPrecondition

rpc ListExperiments '{}'
expect_ok "ListExperiments hides archived experiments by default" '"reco_ymal_v1" not in ids(d)'

rpc ListExperiments '{"status": "EXPERIMENT_STATUS_ARCHIVED"}'
expect_ok "ListExperiments status=ARCHIVED shows it" 'ids(d) == ["reco_ymal_v1"]'

# --- events -------------------------------------------------------------------
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
atc() {
  echo "{\"event_id\": \"$1\", \"type\": \"OUTCOME_TYPE_ADD_TO_CART\", \"session_id\": \"s-1\", \"item_id\": \"sku-1\", \"timestamp\": \"$NOW\"}"
}
rpc experiments.v1.EventService/LogOutcomes "{\"outcomes\": [$(atc atc-e2e-1), {\"event_id\": \"bad-1\", \"type\": \"OUTCOME_TYPE_CLICK\", \"session_id\": \"s-1\", \"timestamp\": \"$NOW\"}]}"
expect_ok "LogOutcomes keeps the valid event and refuses the other by index and field" \
  'd.get("acceptedCount") == 1 and [(r.get("index"), r["field"]) for r in d["rejections"]] == [(1, "item_id")]'

rpc experiments.v1.EventService/LogOutcomes "{\"outcomes\": [$(atc atc-e2e-2)]}"
# kill -9 right after the OK: the event must already be on disk
[[ $RC -eq 0 ]] && kill -KILL "$EXPD_PID"
expect_ok "LogOutcomes atc-e2e-2 acked (expd killed -9 right after)" 'd.get("acceptedCount") == 1'
stop_expd KILL
start_expd
echo "# expd restarted on $ADDR after kill -9"
for _ in $(seq 1 50); do
  rpc experiments.v1.EventService/LogOutcomes "{\"outcomes\": [$(atc atc-e2e-1), $(atc atc-e2e-2)]}"
  [[ $RC -eq 0 ]] && break
  sleep 0.1
done
expect_ok "LogOutcomes retried after the restart: both events are duplicates" \
  'd.get("duplicateCount") == 2 and "acceptedCount" not in d'

# --- results ------------------------------------------------------------------
# Results rebuild from the event log after the restart: UNAVAILABLE until then.
for _ in $(seq 1 50); do
  rpc experiments.v1.ResultsService/GetResults '{"experiment_id": "reco_ymal_v1"}'
  [[ $RC -eq 0 ]] && break
  sleep 0.1
done
expect_ok "GetResults reco_ymal_v1 lists control then treatment, Holm, alpha 0.05" \
  '[v["variant"] for v in d["variants"]] == ["control", "treatment"] and d["multipleComparisonCorrection"] == "holm" and d["alpha"] == 0.05'

rpc experiments.v1.ResultsService/GetResults '{"experiment_id": "reco_ymal_v1", "alpha": 0.9}'
expect_err "GetResults with alpha 0.9 -> InvalidArgument naming alpha" InvalidArgument "alpha: must be above 0"

# --- durability across kill -9 ------------------------------------------------
rpc CreateExperiment "{\"experiment\": $SECOND}"
expect_ok "CreateExperiment pdp_carousel_v1 -> revision 1" 'rev(e) == 1'

rpc UpdateExperiment '{"experiment": {"id": "pdp_carousel_v1", "revision": 1, "name": "PDP carousel: larger thumbnails (v2 copy)", "traffic_percent": 20}, "update_mask": {"paths": ["name", "traffic_percent"]}}'
# kill -9 right after the OK, before anything else
[[ $RC -eq 0 ]] && kill -KILL "$EXPD_PID"
expect_ok "UpdateExperiment pdp_carousel_v1 -> revision 2 (expd killed -9 right after)" \
  'rev(e) == 2 and e.get("trafficPercent") == 20'
stop_expd KILL
start_expd
echo "# expd restarted on $ADDR after kill -9"

rpc GetExperiment '{"id": "pdp_carousel_v1"}'
expect_ok "GetExperiment after kill -9 and restart shows the update (revision 2)" \
  'rev(e) == 2 and e["name"] == "PDP carousel: larger thumbnails (v2 copy)" and e.get("trafficPercent") == 20'

rpc GetExperiment '{"id": "reco_ymal_v1"}'
expect_ok "GetExperiment after restart: reco_ymal_v1 still ARCHIVED at revision $ARCHIVED_REV" \
  "rev(e) == $ARCHIVED_REV and e['status'] == 'EXPERIMENT_STATUS_ARCHIVED'"

# --- tokens -------------------------------------------------------------------
stop_expd TERM
TOKENS_FILE=$WORK/tokens.json
cat >"$TOKENS_FILE" <<EOF
{"tokens": [
  {"token": "$EDITOR_TOKEN", "identity": "$EDITOR_ID", "role": "editor"},
  {"token": "$VIEWER_TOKEN", "identity": "$VIEWER_ID", "role": "viewer"}
]}
EOF
chmod 600 "$TOKENS_FILE"
start_expd --tokens-file "$TOKENS_FILE"
echo "# expd restarted on $ADDR with a tokens file"
AS_EDITOR=(-H "authorization: Bearer $EDITOR_TOKEN")
AS_VIEWER=(-H "authorization: Bearer $VIEWER_TOKEN")

rpc GetExperiment '{"id": "pdp_carousel_v1"}'
expect_err "GetExperiment without a token -> Unauthenticated" Unauthenticated

rpc GetExperiment '{"id": "pdp_carousel_v1"}' -H 'authorization: Bearer not-a-known-token-0000'
expect_err "GetExperiment with an unknown token -> Unauthenticated" Unauthenticated

rpc GetExperiment '{"id": "pdp_carousel_v1"}' "${AS_VIEWER[@]}"
expect_ok "viewer token can GetExperiment" 'rev(e) == 2'

rpc UpdateExperiment '{"experiment": {"id": "pdp_carousel_v1", "revision": 2, "name": "viewer edit"}, "update_mask": {"paths": ["name"]}}' "${AS_VIEWER[@]}"
expect_err "viewer token: UpdateExperiment -> PermissionDenied" PermissionDenied

VIEWER_EXP=${SECOND//pdp_carousel_v1/viewer_exp}
rpc CreateExperiment "{\"experiment\": $VIEWER_EXP}" "${AS_VIEWER[@]}"
expect_err "viewer token: CreateExperiment -> PermissionDenied" PermissionDenied

EDITOR_EXP=${SECOND//pdp_carousel_v1/editor_exp}
rpc CreateExperiment "{\"experiment\": $EDITOR_EXP}" "${AS_EDITOR[@]}"
expect_ok "editor token: CreateExperiment, updated_by is $EDITOR_ID" \
  "e['id'] == 'editor_exp' and rev(e) == 1 and e.get('updatedBy') == '$EDITOR_ID'"

rpc ListExperimentRevisions '{"id": "editor_exp"}' "${AS_VIEWER[@]}"
expect_ok "viewer token: ListExperimentRevisions shows author $EDITOR_ID" \
  "[r.get('author') for r in d['revisions']] == ['$EDITOR_ID']"

stop_expd TERM
echo "$PASSED passed, $FAILED failed"
