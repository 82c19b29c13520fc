#!/usr/bin/env python3
"""Assign over gRPC and OFREP through the real OpenFeature SDKs agree.

Starts the expd binary (env EXPD_BIN, default target/debug/expd under the
repository root) on free loopback ports with a temporary data directory, a
tokens file (an editor, a data-plane token) and the built-in parameter
schema plus one boolean parameter, then:

  1. over gRPC (grpcio stubs generated from proto/ by grpcio-tools into a
     temporary directory), as the editor: creates and starts
     reco_ymal_v1 (you_may_also_like, three variants whose params are
     strings, numbers, integers and a boolean, 80% of the traffic),
     ymal_diversity (another layer: US and DE, app_version >= 5.2.0,
     visits >= 1, logged-in users only) and cart_upsell_bundles (started,
     then paused); a QA override of one user; then waits until Assign
     serves that config version
  2. for 10,000 users (of-user-N, with a session id; every tenth only a
     session id, of-session-N; one in 25 on another placement) asks
     AssignmentService/Assign with the data-plane token
  3. evaluates reco_ymal_v1 and ymal_diversity for every user, and
     cart_upsell_bundles for the first 100, with `get_object_details`
     through the Python SDK (openfeature-sdk with openfeature-provider-ofrep,
     8 threads) and the TypeScript server SDK (@openfeature/server-sdk with
     @openfeature/ofrep-provider: tests/ofrep/agreement.mjs under node, 32
     evaluations in flight)
  4. checks that README.md holds tests/ofrep/readme_python.py and
     tests/ofrep/readme.mjs verbatim (each one fenced block) and runs both
     against the same expd: each prints the variant Assign gives u-18227
  5. compares: where Assign assigns, every SDK answers the same variant,
     deep-equal params (numbers as numbers: 400.0 and 400 are one number)
     and the reason Assign's maps to (BUCKETED SPLIT, OVERRIDE
     TARGETING_MATCH, SHIPPED STATIC), with no error; where it assigns
     nothing, the code default with reason DEFAULT (DISABLED for the
     paused experiment) and no error (the TypeScript provider 0.1.3, which
     predates answers without a value, gives the code default with reason
     ERROR: see OUTDATED_PROVIDER_NO_VALUE)

Prints what each step did (counts of each reason and error, time per SDK)
and exits 1 on a disagreement: each SDK's first, named with its flag, unit,
context and both answers, and how many of each kind there were; with
expd's log.

Needs: python3 with grpcio, grpcio-tools, openfeature-sdk and
openfeature-provider-ofrep importable; node with @openfeature/server-sdk
and @openfeature/ofrep-provider in the node_modules named by
OFREP_NODE_MODULES (default target/ci-tools/node-ofrep/node_modules).
OFREP_USERS changes the number of users (default 10000).
"""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google.protobuf import json_format
from openfeature import api as openfeature_api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

sys.path.insert(0, str(ROOT / "tests/python"))
import expd_harness
from expd_harness import Failure, Services, check, generate_stubs, same_json, wait_until

EDITOR = ("ofrep-editor-token-5e2b7c90a1d4", "alice@example.com", "editor")
DATA_PLANE = ("ofrep-dataplane-token-8f3a61d2c4b7", "rec-service", "data_plane")

YMAL = "reco_ymal_v1"
DIVERSITY = "ymal_diversity"
PAUSED = "cart_upsell_bundles"
PLACEMENT = "you_may_also_like"
OTHER_PLACEMENT = "cart_upsell"
PAUSED_USERS = 100
README_USER, README_SESSION = "u-18227", "s-5f1c9a"

# What an SDK returns when the flag gives no value: the caller's own.
CODE_DEFAULT = {"source": "code default"}
PYTHON_THREADS = 8
NODE_IN_FLIGHT = 32

# Assign's reasons as OFREP names them.
REASONS = {1: "SPLIT", 2: "TARGETING_MATCH", 3: "STATIC"}


# === gRPC ===


class Api(Services):
    """The gRPC services, each call with the token its role needs."""

    def __init__(self, address):
        super().__init__(address, EDITOR[0], DATA_PLANE[0])

    def pause(self, experiment):
        self.admin.PauseExperiment(
            self.admin_pb.PauseExperimentRequest(id=experiment.id, revision=experiment.revision,
                                                 reason="holding it for the OFREP check"),
            metadata=self.auth(EDITOR[0]), timeout=10)

    def set_override(self, experiment_id, user, variant):
        self.admin.SetOverride(self.admin_pb.SetOverrideRequest(qa_override=self.pb.QaOverride(
            experiment_id=experiment_id, unit_type=self.pb.UNIT_TYPE_USER, unit_id=user,
            variant=variant, reason="QA of the OFREP path")), metadata=self.auth(EDITOR[0]), timeout=10)

    def assign_request(self, context):
        """An AssignRequest for an OFREP context (the mapping of
        crates/assign/src/ofrep.rs, the other way round)."""
        rest = {key: value for key, value in context.items()
                if key not in ("targetingKey", "session_id", "placement", "page_type", "country", "device")}
        return self.assign_pb.AssignRequest(
            user_id=context.get("targetingKey", ""),
            session_id=context.get("session_id", ""),
            context=self.assign_pb.RequestContext(
                placement=context.get("placement", ""), page_type=context.get("page_type", ""),
                country=context.get("country", ""), device=context.get("device", ""),
                attributes={key: attribute_text(value) for key, value in rest.items()}),
            defer_exposure=True,
        )

    def assign(self, context):
        return self.assigner.Assign(self.assign_request(context), metadata=self.auth(DATA_PLANE[0]), timeout=10)

    def assign_many(self, contexts):
        """Each context's Assign answer, 250 calls in flight at a time."""
        return self.assign_all([self.assign_request(context) for context in contexts])


def attribute_text(value):
    """An attribute as OFREP's server reads it: strings as they are,
    numbers and booleans as their JSON text."""
    return value if isinstance(value, str) else json.dumps(value)


def assignment_of(answer, experiment_id):
    for assignment in answer.assignments:
        if assignment.experiment_id == experiment_id:
            return assignment
    return None


# === the experiments and the users ===


def variant(pb, name, weight, params):
    made = pb.Variant(name=name, weight=weight)
    made.params.update(params)
    return made


def experiments(pb):
    metrics = pb.MetricsConfig(primary_metric="add_to_cart_rate", secondary_metrics=["ctr"])
    ymal = pb.Experiment(
        id=YMAL, name="YMAL: model v3 with price and style re-ranking", owner=EDITOR[1],
        hypothesis="Re-ranking by style (0.6) and price (0.2) raises add-to-cart rate",
        layer="ymal_ranking", control_variant="control", traffic_percent=80,
        bucketing_unit=pb.BUCKETING_UNIT_USER_OR_SESSION,
        eligibility=pb.Eligibility(placements=[PLACEMENT]), metrics=metrics,
        variants=[
            variant(pb, "control", 34, {"model_version": "v2", "candidate_pool_size": 200,
                                        "exclude_seen_items": False}),
            variant(pb, "treatment", 33, {"model_version": "v3", "rerank_weight_price": 0.2,
                                          "rerank_weight_style": 0.6, "candidate_pool": "cross_category",
                                          "candidate_pool_size": 400, "exclude_seen_items": True}),
            variant(pb, "style_max", 33, {"model_version": "v3.1-canary", "rerank_weight_style": 1.0,
                                          "rerank_weight_price": 0, "price_band": "tight",
                                          "candidate_pool_size": 50, "exclude_seen_items": True}),
        ],
    )
    rule = pb.AttributeRule
    diversity = pb.Experiment(
        id=DIVERSITY, name="YMAL: fewer items per brand", owner=EDITOR[1],
        hypothesis="At most two items per brand raises click-through on YMAL",
        layer="ymal_diversity", control_variant="control", traffic_percent=100,
        bucketing_unit=pb.BUCKETING_UNIT_USER,
        eligibility=pb.Eligibility(
            placements=[PLACEMENT], countries=["US", "DE"],
            attribute_rules=[
                rule(attribute="app_version", operator=pb.ATTRIBUTE_OPERATOR_SEMVER_GREATER_THAN_OR_EQUAL,
                     values=["5.2.0"]),
                rule(attribute="visits", operator=pb.ATTRIBUTE_OPERATOR_GREATER_THAN_OR_EQUAL, values=["1"]),
            ]),
        metrics=metrics,
        variants=[
            variant(pb, "control", 50, {"diversity_max_per_brand": 5, "personalization": "user_based"}),
            variant(pb, "diverse", 50, {"diversity_max_per_brand": 2, "diversity_max_per_color": 3,
                                        "personalization": "item_only", "rerank_weight_popularity": 0.25}),
        ],
    )
    paused = pb.Experiment(
        id=PAUSED, name="Cart upsell: bundles", owner=EDITOR[1],
        hypothesis="Bundles in the cart raise add-to-cart rate", control_variant="control",
        traffic_percent=100, metrics=metrics, eligibility=pb.Eligibility(placements=[OTHER_PLACEMENT]),
        variants=[variant(pb, "control", 50, {"model_version": "v2"}),
                  variant(pb, "bundles", 50, {"model_version": "v4"})],
    )
    return ymal, diversity, paused


def user_context(index):
    """The OFREP context of user `index`: every tenth a session only, one
    in 25 on another placement, and country, device and attributes that
    spread the units over ymal_diversity's eligibility."""
    context = {} if index % 10 == 0 else {"targetingKey": f"of-user-{index}"}
    context.update({
        "session_id": f"of-session-{index}",
        "placement": OTHER_PLACEMENT if index % 25 == 7 else PLACEMENT,
        "page_type": "product_detail",
        "country": ("US", "DE", "FR", "GB")[index % 4],
        "device": ("mobile", "desktop")[(index // 4) % 2],
        "app_version": ("5.1.0", "5.2.0", "5.3.1")[index % 3],
        "visits": index % 7,
        "vip": index % 5 == 0,
    })
    return context


def unit_of(context):
    return context.get("targetingKey") or context["session_id"]


# === the SDKs ===


class LogCount(logging.Handler):
    """What the SDK and provider log: counted per level, the first of each
    kept (thousands of identical tracebacks say nothing more). `handle`
    holds the handler's lock around `emit`."""

    def __init__(self):
        super().__init__()
        self.levels = {}

    def emit(self, record):
        entry = self.levels.setdefault(record.levelname.lower(), {"count": 0, "first": None})
        entry["count"] += 1
        if entry["first"] is None:
            entry["first"] = record.getMessage() + (f" ({record.exc_info[1]!r})" if record.exc_info else "")


def evaluate_python(base, evaluations):
    """Every evaluation through the Python SDK with the OFREP provider."""
    logger = logging.getLogger("openfeature")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logged = LogCount()
    logger.addHandler(logged)
    openfeature_api.set_provider(OFREPProvider(
        base, headers_factory=lambda: {"Authorization": f"Bearer {DATA_PLANE[0]}"}))
    client = openfeature_api.get_client("ofrep-agreement")

    def one(evaluation):
        context = dict(evaluation["context"])
        targeting_key = context.pop("targetingKey", None)
        details = client.get_object_details(
            evaluation["key"], CODE_DEFAULT, EvaluationContext(targeting_key=targeting_key, attributes=context))
        return {
            "key": evaluation["key"],
            "user": unit_of(evaluation["context"]),
            "variant": details.variant,
            "value": details.value,
            "reason": enum_text(details.reason),
            "errorCode": enum_text(details.error_code),
            "errorMessage": details.error_message,
        }

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=PYTHON_THREADS) as pool:
        results = list(pool.map(one, evaluations))
    seconds = time.monotonic() - started
    openfeature_api.shutdown()
    logger.removeHandler(logged)
    return results, seconds, logged.levels


def enum_text(value):
    return None if value is None else getattr(value, "value", value)


def node_dir(work):
    """A directory where node resolves the OpenFeature packages: a
    node_modules link to the install, and copies of the scripts run."""
    modules = Path(os.environ.get("OFREP_NODE_MODULES", ROOT / "target/ci-tools/node-ofrep/node_modules"))
    if not modules.is_absolute():
        modules = ROOT / modules
    for package in ("@openfeature/server-sdk", "@openfeature/ofrep-provider"):
        check((modules / package / "package.json").exists(),
              f"no {package} in {modules} (npm install it there, or set OFREP_NODE_MODULES)")
    where = work / "node"
    where.mkdir()
    (where / "node_modules").symlink_to(modules.resolve(), target_is_directory=True)
    for script in ("agreement.mjs", "readme.mjs"):
        shutil.copyfile(HERE / script, where / script)
    return where


def evaluate_typescript(where, base, evaluations):
    """Every evaluation through the TypeScript server SDK with the OFREP
    provider (tests/ofrep/agreement.mjs)."""
    job = where / "job.json"
    job.write_text(json.dumps({
        "baseUrl": base, "token": DATA_PLANE[0], "codeDefault": CODE_DEFAULT,
        "concurrency": NODE_IN_FLIGHT, "evaluations": evaluations,
    }))
    started = time.monotonic()
    ran = subprocess.run(["node", "agreement.mjs", str(job)], cwd=where, capture_output=True, text=True,
                         timeout=600)
    wall = time.monotonic() - started
    check(ran.returncode == 0,
          f"node agreement.mjs exited with {ran.returncode}:\n{ran.stderr[-4000:]}\n{ran.stdout[-2000:]}")
    lines = [json.loads(line) for line in ran.stdout.splitlines() if line.strip()]
    check(lines and "done" in lines[-1], f"node agreement.mjs printed no closing line:\n{ran.stdout[-2000:]}")
    closing = lines.pop()
    check(len(lines) == len(evaluations) == closing["done"],
          f"node agreement.mjs answered {len(lines)} of {len(evaluations)} evaluations")
    check([line["index"] for line in lines] == list(range(len(evaluations))),
          "node agreement.mjs answered out of order")
    return lines, closing["seconds"], wall, closing["logged"]


# === the README's snippets ===


def fenced_blocks(text):
    """The contents of every fenced code block of a Markdown text."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        opened = re.match(r"^(`{3,})\s*\S*\s*$", lines[i])
        if not opened:
            i += 1
            continue
        fence, j = opened.group(1), i + 1
        while j < len(lines) and lines[j].strip() != fence:
            j += 1
        blocks.append("\n".join(lines[i + 1:j]))
        i = j + 1
    return blocks


def readme_snippets(api, base, where):
    """README.md holds both snippets verbatim; both run against this expd
    and print the variant Assign gives the snippet's user."""
    readme = (ROOT / "README.md").read_text()
    blocks = fenced_blocks(readme)
    expected = assignment_of(api.assign({"targetingKey": README_USER, "session_id": README_SESSION,
                                         "placement": PLACEMENT}), YMAL)
    variant = expected.variant if expected else None
    reason = REASONS[expected.reason] if expected else "DEFAULT"
    env = dict(os.environ, EXPD_URL=base, EXPD_TOKEN=DATA_PLANE[0],
               PYTHONPATH=os.pathsep.join(str(Path(p).resolve()) for p in sys.path if p))
    printed = []
    for script, command, cwd, none in (
        ("readme_python.py", [sys.executable, str(HERE / "readme_python.py")], HERE, "None"),
        ("readme.mjs", ["node", "readme.mjs"], where, "undefined"),
    ):
        text = (HERE / script).read_text().rstrip("\n")
        check(text in blocks,
              f"README.md has no fenced block that is tests/ofrep/{script} verbatim: "
              "copy the file into the README's 'From any OpenFeature SDK' section, or the file from it")
        ran = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        check(ran.returncode == 0, f"the README's {script} exited with {ran.returncode}:\n{ran.stderr[-3000:]}")
        output = ran.stdout.strip()
        words = output.split(" ", 2)
        check(len(words) == 3, f"the README's {script} printed {output!r}, not 'variant reason value'")
        check(words[:2] == [variant or none, reason],
              f"the README's {script} printed {output!r}: variant {words[0]}, reason {words[1]}; "
              f"Assign gives {README_USER} variant {variant} ({reason})"
              + (f"\n{ran.stderr[-2000:]}" if ran.stderr.strip() else ""))
        printed.append(f"{script} verbatim, printed {output!r}")
    return "; ".join(printed)


# === the comparison ===


def expected_answer(assignment, key):
    if assignment is not None:
        return {"variant": assignment.variant, "value": json_format.MessageToDict(assignment.params),
                "reason": REASONS[assignment.reason]}
    return {"variant": None, "value": CODE_DEFAULT, "reason": "DISABLED" if key == PAUSED else "DEFAULT"}


# @openfeature/ofrep-provider 0.1.3, the only version the npm registry here
# offers, predates OFREP's ADR 0006 (an answer without a value means "use
# the code default"): its core counts such an answer as malformed
# (ofrep-core index.cjs.js: success only if 'value' in the response) and
# resolves to the code default with reason ERROR and code GENERAL. The
# caller still gets its code default, which is what such an answer asks
# for; that, and only that, is accepted from it. Upstream 0.2 reads the
# answer as DEFAULT, and then this exception no longer applies.
OUTDATED_PROVIDER_NO_VALUE = {"errorCode": "GENERAL", "reason": "ERROR"}


def disagreement(expected, got, no_value_as_error=False):
    """What differs between Assign's expected answer and an SDK's, or None.
    With `no_value_as_error`, an answer without a value may come back as
    the code default with OUTDATED_PROVIDER_NO_VALUE's reason and code."""
    kind = "assigned" if expected["reason"] in REASONS.values() else "no value"
    if (no_value_as_error and kind == "no value"
            and all(got.get(field) == value for field, value in OUTDATED_PROVIDER_NO_VALUE.items())
            and same_json(got.get("value"), expected["value"])):
        return None
    if got.get("errorCode"):
        return f"{kind}: error {got['errorCode']}"
    if got.get("variant") != expected["variant"]:
        return f"{kind}: variant"
    if not same_json(got.get("value"), expected["value"]):
        return f"{kind}: value"
    if got.get("reason") != expected["reason"]:
        return f"{kind}: reason {expected['reason']} answered {got.get('reason')}"
    return None


def compare(sdk, evaluations, expected, results, no_value_as_error=False):
    """The first disagreement of `sdk` with Assign (raised), and how many
    of each kind there were."""
    kinds = Counter()
    first = None
    for evaluation, want, got in zip(evaluations, expected, results):
        check(got["key"] == evaluation["key"] and got["user"] == unit_of(evaluation["context"]),
              f"{sdk}: answers out of order at {evaluation['key']} {unit_of(evaluation['context'])}")
        kind = disagreement(want, got, no_value_as_error)
        if kind:
            kinds[kind] += 1
            if first is None:
                first = (kind, evaluation, want, got)
    if first:
        kind, evaluation, want, got = first
        more = ", ".join(f"{count} x {name}" for name, count in kinds.most_common())
        raise Failure(
            f"{sdk} disagrees with Assign on flag {evaluation['key']} for {unit_of(evaluation['context'])} "
            f"({kind}):\n  context {json.dumps(evaluation['context'])}\n"
            f"  Assign gives  {json.dumps(want)}\n"
            f"  {sdk} gives {json.dumps({k: got.get(k) for k in ('variant', 'value', 'reason', 'errorCode', 'errorMessage')})}\n"
            f"  in all, {sum(kinds.values())} of {len(evaluations)} evaluations disagree: {more}")


def reason_counts(results):
    counts = Counter(result["reason"] for result in results)
    return " ".join(f"{reason} {count}" for reason, count in sorted(counts.items(), key=lambda kv: str(kv[0])))


def errors_text(results):
    """The errors an SDK answered, by code and message."""
    errors = Counter((result["errorCode"], (result["errorMessage"] or "")[:200])
                     for result in results if result.get("errorCode"))
    if not errors:
        return "no errors"
    return "errors: " + "; ".join(f"{count} x {code} {message!r}" for (code, message), count in errors.most_common(3))


def logged_text(logged):
    if not logged:
        return "nothing logged"
    return "; ".join(f"logged {entry['count']} {level}(s), first: {entry['first'][:300]}"
                     for level, entry in sorted(logged.items()))


# === the run ===


def run(expd, work):
    generate_stubs(work / "stubs")
    expd.start()
    api = Api(expd.grpc_addr)
    users = int(os.environ.get("OFREP_USERS", "10000"))
    check(users >= max(PAUSED_USERS, 50), f"OFREP_USERS={users}: too few users")

    # 1. the experiments, a QA override, and Assign serving them
    at = time.monotonic()
    ymal, diversity, paused = experiments(api.pb)
    api.create_and_start(ymal, "OFREP agreement")
    api.create_and_start(diversity, "OFREP agreement")
    api.pause(api.create_and_start(paused, "OFREP agreement"))
    # Assign follows each change asynchronously: wait until it serves
    # the version ConfigService publishes now.
    started = api.config_version()
    wait_until(lambda: api.assign({"session_id": "config-version-probe"}).config_version >= started,
               f"Assign serves config version {started}")
    # The override: the first logged-in user in reco_ymal_v1, forced into
    # another variant than its own.
    first = [user_context(index) for index in range(50)]
    own = next(((context, found) for context, answer in zip(first, api.assign_many(first))
                if "targetingKey" in context and (found := assignment_of(answer, YMAL))), None)
    check(own, f"Assign puts none of the first 50 users in {YMAL}")
    override_context, own = own
    override_user = override_context["targetingKey"]
    forced = "style_max" if own.variant != "style_max" else "treatment"
    api.set_override(YMAL, override_user, forced)
    version = api.config_version()
    wait_until(lambda: api.assign(override_context).config_version >= version,
               f"Assign serves config version {version}")
    overridden = assignment_of(api.assign(override_context), YMAL)
    check(overridden and overridden.variant == forced and REASONS.get(overridden.reason) == "TARGETING_MATCH",
          f"Assign answers {override_user} {overridden} after the override to {forced}")
    print(f"ok 1 - setup: {YMAL} (3 variants, 80%), {DIVERSITY} (US/DE, app_version >= 5.2.0, visits >= 1, "
          f"users only), {PAUSED} paused; override {override_user} {own.variant} -> {forced}; "
          f"Assign serves config version {version} ({time.monotonic() - at:.1f} s)", flush=True)

    # 2. Assign for every user
    contexts = [user_context(index) for index in range(users)]
    at = time.monotonic()
    answers = api.assign_many(contexts)
    assign_seconds = time.monotonic() - at
    evaluations, expected = [], []
    for index, (context, answer) in enumerate(zip(contexts, answers)):
        check(answer.config_version >= version,
              f"Assign answered {unit_of(context)} from config version {answer.config_version} < {version}")
        for key in (YMAL, DIVERSITY) + ((PAUSED,) if index < PAUSED_USERS else ()):
            evaluations.append({"key": key, "context": context})
            expected.append(expected_answer(assignment_of(answer, key), key))
    per_flag = "; ".join(
        f"{key}: " + reason_counts([want for evaluation, want in zip(evaluations, expected)
                                    if evaluation["key"] == key])
        for key in (YMAL, DIVERSITY, PAUSED))
    print(f"ok 2 - Assign over gRPC: {users} users in {assign_seconds:.1f} s; {len(evaluations)} evaluations "
          f"expected: {per_flag}", flush=True)

    # 3. the SDKs
    python, python_seconds, python_logged = evaluate_python(expd.base, evaluations)
    print(f"ok 3 - Python SDK (openfeature-sdk, openfeature-provider-ofrep): {len(python)} evaluations in "
          f"{python_seconds:.1f} s, {PYTHON_THREADS} threads: {reason_counts(python)}; {errors_text(python)}; "
          f"{logged_text(python_logged)}", flush=True)
    where = node_dir(work)
    node, node_seconds, node_wall, node_logged = evaluate_typescript(where, expd.base, evaluations)
    print(f"ok 4 - TypeScript SDK (@openfeature/server-sdk, @openfeature/ofrep-provider): {len(node)} "
          f"evaluations in {node_seconds:.1f} s ({node_wall:.1f} s with node's start), {NODE_IN_FLIGHT} in "
          f"flight: {reason_counts(node)}; {errors_text(node)}; {logged_text(node_logged)}", flush=True)

    # 4. the README's snippets
    print(f"ok 5 - README: {readme_snippets(api, expd.base, where)}", flush=True)

    # 5. the comparison: both SDKs, then the first disagreement of each
    failures = []
    for sdk, results, no_value_as_error in (("the Python SDK", python, False),
                                            ("the TypeScript SDK", node, True)):
        try:
            compare(sdk, evaluations, expected, results, no_value_as_error)
            forced_answers = [got for evaluation, got in zip(evaluations, results)
                              if evaluation["key"] == YMAL and got["user"] == override_user]
            check(forced_answers and all(got["reason"] == "TARGETING_MATCH" and got["variant"] == forced
                                         for got in forced_answers),
                  f"{sdk} answers the override user {override_user} {forced_answers}")
        except Failure as failure:
            failures.append(str(failure))
    check(not failures, "\n".join(failures))
    print(f"ok 6 - agreement: Assign, the Python SDK and the TypeScript SDK give the same variant, params "
          f"and reason for all {len(evaluations)} evaluations ({users} users); the override user "
          f"{override_user} gets {forced} with TARGETING_MATCH", flush=True)


def main():
    return expd_harness.main("ofrep", "Assign and both SDKs agree", run, (EDITOR, DATA_PLANE), boolean_param=True)


if __name__ == "__main__":
    sys.exit(main())
