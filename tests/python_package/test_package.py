#!/usr/bin/env python3
"""The Python package expd_client (crates/python), installed, does what it
promises: the published vectors, Assign's answers, config changes, life
without the admin, events that arrive once, typed errors, shipped stubs.

Starts the expd binary (env EXPD_BIN, default target/debug/expd under the
repository root) on free loopback ports with a temporary data directory, a
tokens file (an editor, a data-plane token), the built-in parameter schema
plus one boolean parameter and `--events-flush-interval 1s`; calls its gRPC
services with grpcio (stubs generated from proto/ by grpcio-tools into a
temporary directory); reads its Parquet files with DuckDB. Checks:

  1. the published vectors: every vector of crates/core/testdata/
     bucketing.json through `bucket`, every case of assignments.json
     through `Snapshot.from_json(...).evaluate(..., now=...)`: the listed
     assignments (experiment, variant, reason, unit type), in order
  2. the type stubs ship: the installed package holds the .pyi of
     crates/python (as maturin names it) and py.typed, and the stubs name
     what the module has, with the runtime's parameters
  3. Assign's answers: two experiments created and started over gRPC
     (params: strings, numbers, integers, an enum, a boolean; one on 40%
     of the traffic, eligibility by country and app version); a Client
     (data-plane token, snapshot file) answers 10,000 users (every tenth
     only a session id, one in 25 on another placement) exactly as
     AssignmentService/Assign does with the same context (defer_exposure
     on both): config version, experiments, variants, layers, revisions,
     reasons, unit types, params (numbers as numbers, booleans as
     booleans), merged params and the primary assignment
  4. errors: InvalidRequest naming the field (no ids, a bad outcome type,
     an address that is not a URL or not a valid one, a token that cannot
     be a header, a config that is not JSON), ConfigTimeout and NoConfig
     from a client of a closed port; every exception is an ExpdError
  5. a config change reaches the client without a restart: the 100%
     experiment paused over gRPC, `wait_for_version` (the version from
     GetConfigSnapshot), and it is gone from every answer, the other
     experiment's untouched, Assign agreeing; resumed, every unit gets its
     variant back
  6. the README: tests/python_package/readme_snippet.py runs against this
     expd and prints Assign's assignments and params for its user; if
     README.md has a "From Python" section, that section holds the snippet
     verbatim (else a note is printed)
  7. without the admin: expd stopped (SIGTERM), the same client answers the
     10,000 users as before; a new Client on the same snapshot file (expd
     still down) returns from `wait_for_config(5)` with the same version
     and answers 1,000 users the same
  8. events arrive once: expd restarted on the same data directory; a
     Client with log_exposures=True assigns 2,000 new users and logs 300
     outcomes with explicit event ids (two of them queued twice: one
     right after itself, one again after a flush, a retry of an event
     already acknowledged), then `close()`; the sender's counters; expd
     stopped (SIGTERM rolls the log into Parquet); DuckDB over
     data/events/exposures and outcomes: every outcome id exactly once,
     each of the users' bucketed assignments exactly one exposure (its
     variant, revision and placement), none for the 10,000 users of
     check 3 (defer_exposure); log_outcome after close() raises

Prints "ok N - ..." per check; exits 1 on the first failure (with expd's
log), 2 when something it needs is missing.

Needs: python3 with expd_client (pip install ./crates/python), grpcio,
grpcio-tools and duckdb importable.
"""

import ast
import gc
import inspect
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

try:
    import duckdb
    import expd_client
    import grpc
    from google.protobuf import json_format
except ImportError as missing:
    print(f"error: {missing} (this test needs expd_client, grpcio, grpcio-tools and duckdb importable)",
          file=sys.stderr)
    sys.exit(2)

sys.path.insert(0, str(ROOT / "tests/python"))
import expd_harness
from expd_harness import Failure, Services, check, free_port, generate_stubs, same_json, wait_until

EDITOR = ("pypkg-editor-token-4c8e1a97b2d5", "alice@example.com", "editor")
DATA_PLANE = ("pypkg-dataplane-token-7a2f9e03c6b1", "rec-service", "data_plane")

RANKING = "py_ymal_ranking"      # 100% of you_may_also_like
DIVERSITY = "py_ymal_diversity"  # 40%: US and DE, app_version >= 5.2.0
PLACEMENT = "you_may_also_like"
OTHER_PLACEMENT = "cart"

USERS = 10_000         # check 3
RESTART_USERS = 1_000  # check 7, the new client on the snapshot file
EXPOSED_USERS = 2_000  # check 8
OUTCOMES = 300         # check 8
README_USER, README_SESSION = "u-18224", "s-5f1c9a"

DROPPED_OUTCOMES = 50  # queued by a client that is dropped without close()
WAIT = 30  # seconds anything asynchronous gets
REASONS = {1: "bucketed", 2: "override", 3: "shipped"}
UNIT_TYPES = {1: "user", 2: "session"}


# === gRPC ===


class Api(Services):
    """The gRPC services, each call with the token its role needs."""

    def __init__(self, address):
        super().__init__(address, EDITOR[0], DATA_PLANE[0])

    def pause(self, experiment_id):
        return self.admin.PauseExperiment(
            self.admin_pb.PauseExperimentRequest(id=experiment_id, reason="does the client follow?"),
            metadata=self.auth(EDITOR[0]), timeout=10).experiment

    def resume(self, experiment_id):
        return self.admin.ResumeExperiment(
            self.admin_pb.ResumeExperimentRequest(id=experiment_id, reason="back on"),
            metadata=self.auth(EDITOR[0]), timeout=10).experiment

    def assign_request(self, context):
        return self.assign_pb.AssignRequest(
            user_id=context["user_id"], session_id=context["session_id"],
            context=self.assign_pb.RequestContext(
                placement=context["placement"], page_type=context["page_type"],
                country=context["country"], device=context["device"],
                attributes=context["attributes"]),
            defer_exposure=True,
        )

    def assign(self, context):
        return self.assigner.Assign(self.assign_request(context), metadata=self.auth(DATA_PLANE[0]), timeout=10)

    def assign_many(self, contexts):
        """Each context's Assign answer, 250 calls in flight at a time."""
        return self.assign_all([self.assign_request(context) for context in contexts])


# === the experiments, the users, the answers ===


def variant(pb, name, weight, params):
    made = pb.Variant(name=name, weight=weight)
    made.params.update(params)
    return made


def experiments(pb):
    metrics = pb.MetricsConfig(primary_metric="add_to_cart_rate", secondary_metrics=["ctr"])
    ranking = pb.Experiment(
        id=RANKING, name="YMAL: model v3 with price and style re-ranking", owner=EDITOR[1],
        hypothesis="Re-ranking by style (0.6) and price (0.2) raises add-to-cart rate",
        layer="py_ranking", control_variant="control", traffic_percent=100,
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
    diversity = pb.Experiment(
        id=DIVERSITY, name="YMAL: fewer items per brand", owner=EDITOR[1],
        hypothesis="At most two items per brand raises click-through on YMAL",
        layer="py_diversity", control_variant="control", traffic_percent=40,
        bucketing_unit=pb.BUCKETING_UNIT_USER_OR_SESSION,
        eligibility=pb.Eligibility(
            placements=[PLACEMENT], countries=["US", "DE"],
            attribute_rules=[pb.AttributeRule(
                attribute="app_version", operator=pb.ATTRIBUTE_OPERATOR_SEMVER_GREATER_THAN_OR_EQUAL,
                values=["5.2.0"])]),
        metrics=metrics,
        variants=[
            variant(pb, "control", 50, {"diversity_max_per_brand": 5, "personalization": "user_based"}),
            variant(pb, "diverse", 50, {"diversity_max_per_brand": 2, "diversity_max_per_color": 3,
                                        "personalization": "item_only", "rerank_weight_popularity": 0.25}),
        ],
    )
    return ranking, diversity


def user_context(prefix, index, placement=None):
    """Request `index` of a population: every tenth only a session id,
    every seventh (else) only a user id, one in 25 on another placement;
    country, device and app version spread over the eligibility."""
    return {
        "user_id": "" if index % 10 == 0 else f"{prefix}-user-{index}",
        "session_id": "" if index % 10 and index % 7 == 3 else f"{prefix}-session-{index}",
        "placement": placement or (OTHER_PLACEMENT if index % 25 == 7 else PLACEMENT),
        "page_type": ("product_detail", "home")[index % 2],
        "country": ("US", "DE", "FR", "GB")[index % 4],
        "device": ("mobile", "desktop")[(index // 4) % 2],
        "attributes": {"app_version": ("5.1.0", "5.2.0", "5.3.1")[index % 3]},
    }


def unit_of(context):
    return context["user_id"] or context["session_id"]


def package_assign(client, context, **options):
    return client.assign(
        context["user_id"] or None, context["session_id"] or None,
        placement=context["placement"], page_type=context["page_type"], country=context["country"],
        device=context["device"], attributes=context["attributes"], **options)


def package_view(answer):
    """An Answer of the package as plain data."""
    primary = answer.primary
    return {
        "config_version": answer.config_version,
        "unit_type": answer.unit_type,
        "params": answer.params,
        "primary": (primary.experiment_id, primary.variant) if primary else None,
        "assignments": [{
            "experiment_id": a.experiment_id, "variant": a.variant, "layer": a.layer,
            "revision": a.revision, "reason": a.reason, "unit_type": a.unit_type, "params": a.params,
        } for a in answer.assignments],
    }


def grpc_view(answer):
    """An AssignResponse as the same plain data."""
    return {
        "config_version": answer.config_version,
        "unit_type": UNIT_TYPES.get(answer.unit_type, f"enum {answer.unit_type}"),
        "params": json_format.MessageToDict(answer.params),
        "primary": (answer.experiment_id, answer.variant) if answer.experiment_id else None,
        "assignments": [{
            "experiment_id": a.experiment_id, "variant": a.variant, "layer": a.layer,
            "revision": a.revision, "reason": REASONS.get(a.reason, f"enum {a.reason}"),
            "unit_type": UNIT_TYPES.get(a.unit_type, f"enum {a.unit_type}"),
            "params": json_format.MessageToDict(a.params),
        } for a in answer.assignments],
    }


def variants_of(view):
    """What a unit keeps across revisions: experiment, variant, reason,
    unit type and params of each assignment."""
    return [(a["experiment_id"], a["variant"], a["reason"], a["unit_type"], json.dumps(a["params"], sort_keys=True))
            for a in view["assignments"]]


def agree(got, want):
    """Python dict equality, and the stricter JSON equality (a boolean is
    not 1, "1" is not 1)."""
    return got == want and same_json(got, want)


def compare_all(label, contexts, got_views, want_views, want_label="Assign"):
    """Raises on the first context whose views differ (with how many do)."""
    differing = [i for i, (got, want) in enumerate(zip(got_views, want_views)) if not agree(got, want)]
    if differing:
        i = differing[0]
        raise Failure(
            f"{label} differs from {want_label} for {len(differing)} of {len(contexts)} requests; the first, "
            f"{json.dumps(contexts[i])}:\n  {label}: {got_views[i]!r}\n  {want_label}: {want_views[i]!r}")


# === 1. the published vectors ===


def published_vectors():
    testdata = ROOT / "crates/core/testdata"
    vectors = json.loads((testdata / "bucketing.json").read_text())["vectors"]
    for vector in vectors:
        got = expd_client.bucket(vector["salt"], vector["unit_id"])
        check(got == vector["bucket"],
              f"bucket({vector['salt']!r}, {vector['unit_id']!r}) = {got}, the vector says {vector['bucket']}")
    published = json.loads((testdata / "assignments.json").read_text())
    snapshot = expd_client.Snapshot.from_json(json.dumps(published["config"]))
    now = published["now_unix_seconds"]
    cases = published["cases"]
    assigned = 0
    for case in cases:
        answer = snapshot.evaluate(
            case["user_id"] or None, case["session_id"] or None,
            placement=case.get("placement", ""), page_type=case.get("page_type", ""),
            country=case.get("country", ""), device=case.get("device", ""),
            attributes=case.get("attributes") or {}, now=now)
        got = [{"experiment_id": a.experiment_id, "variant": a.variant, "reason": a.reason,
                "unit_type": a.unit_type} for a in answer.assignments]
        check(got == case["assignments"],
              f"case {json.dumps({k: v for k, v in case.items() if k != 'assignments'})}:\n"
              f"  evaluate gives {got}\n  the vector says {case['assignments']}")
        check(answer.config_version == published["config"]["version"],
              f"evaluate answers config version {answer.config_version}, the config is "
              f"{published['config']['version']}")
        assigned += len(got)
    reasons = sorted({a["reason"] for case in cases for a in case["assignments"]})
    return (f"{len(vectors)} bucketing vectors, {len(cases)} assignment cases ({assigned} assignments; "
            f"reasons {', '.join(reasons)}) equal")


# === 2. the type stubs ship ===


REQUIRED = "<required>"


def stub_signature(function):
    """(name, kind, default) of each parameter of a stub `def` but self."""
    args = function.args
    out = []
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for arg, default in zip(positional, defaults):
        out.append((arg.arg, "positional", REQUIRED if default is None else ast.literal_eval(default)))
    if args.vararg:
        out.append((args.vararg.arg, "*", REQUIRED))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        out.append((arg.arg, "keyword", REQUIRED if default is None else ast.literal_eval(default)))
    return [parameter for parameter in out if parameter[0] != "self"]


def runtime_signature(function):
    kinds = {inspect.Parameter.POSITIONAL_ONLY: "positional", inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
             inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.KEYWORD_ONLY: "keyword"}
    return [(p.name.lstrip("_") if p.kind == inspect.Parameter.VAR_POSITIONAL else p.name, kinds[p.kind],
             REQUIRED if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(function).parameters.values() if p.name != "self"]


def stubs_ship():
    package = Path(expd_client.__file__).resolve().parent
    source = (ROOT / "crates/python/expd_client.pyi").read_text()
    # maturin installs the stub of a pure-Rust package as the package's
    # __init__.pyi; a mixed layout would keep the name.
    found = [package / name for name in ("__init__.pyi", "expd_client.pyi") if (package / name).is_file()]
    check(found, f"no .pyi in the installed package {package}: {sorted(p.name for p in package.iterdir())}")
    check(any(path.read_text() == source for path in found),
          f"{found[0]} is not crates/python/expd_client.pyi (a stale install? pip install ./crates/python)")
    check((package / "py.typed").is_file(), f"no py.typed in the installed package {package}")

    # The stubs describe the module: every public name, and each
    # function's parameters (names, positional or keyword-only, defaults).
    tree = ast.parse(source)
    top = {}
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            top[node.name] = node
        elif isinstance(node, ast.AnnAssign):
            top[node.target.id] = node
    public = {name for name in dir(expd_client) if not name.startswith("_") and name != "expd_client"}
    check(public <= set(top), f"the stubs lack {sorted(public - set(top))}")
    check(set(top) - {"__version__"} <= public, f"the stubs name what the module lacks: {sorted(set(top) - public)}")
    compared = 0
    for name, node in top.items():
        runtime = getattr(expd_client, name)
        if isinstance(node, ast.FunctionDef):
            check(stub_signature(node) == runtime_signature(runtime),
                  f"{name}: the stub's parameters {stub_signature(node)} are not the module's "
                  f"{runtime_signature(runtime)}")
            compared += 1
        if not isinstance(node, ast.ClassDef) or issubclass(runtime, Exception):
            continue
        for member in node.body:
            if isinstance(member, ast.AnnAssign):
                check(hasattr(runtime, member.target.id), f"the stubs give {name}.{member.target.id}; it has none")
            elif isinstance(member, ast.FunctionDef):
                check(hasattr(runtime, member.name), f"the stubs give {name}.{member.name}(); it has none")
                if member.name == "__init__":
                    want, target = runtime_signature(runtime), f"{name}()"
                elif any(isinstance(d, ast.Name) and d.id == "property" for d in member.decorator_list):
                    continue
                else:
                    want, target = runtime_signature(getattr(runtime, member.name)), f"{name}.{member.name}"
                check(stub_signature(member) == want,
                      f"{target}: the stub's parameters {stub_signature(member)} are not the module's {want}")
                compared += 1
    return (f"{package.name}/{found[0].name} (= crates/python/expd_client.pyi) and py.typed installed in "
            f"{package.parent.name}; the stubs name all {len(public)} public names, {compared} signatures "
            f"match the runtime's")


# === 3. the package against Assign ===


def agreement(api, client, version):
    contexts = [user_context("py", index) for index in range(USERS)]
    at = time.monotonic()
    answers = api.assign_many(contexts)
    grpc_seconds = time.monotonic() - at
    want = [grpc_view(answer) for answer in answers]
    check(all(view["config_version"] == version for view in want),
          f"Assign answered from config versions {sorted({v['config_version'] for v in want})}, not {version}")
    at = time.monotonic()
    got = [package_view(package_assign(client, context, defer_exposure=True)) for context in contexts]
    package_seconds = time.monotonic() - at
    compare_all("Client.assign", contexts, got, want)
    counts = {}
    for view in got:
        for a in view["assignments"]:
            key = f"{a['experiment_id']}/{a['variant']}"
            counts[key] = counts.get(key, 0) + 1
    check(all(f"{RANKING}/{name}" in counts for name in ("control", "treatment", "style_max"))
          and all(f"{DIVERSITY}/{name}" in counts for name in ("control", "diverse")),
          f"not every variant got units: {counts}")
    sessions = sum(1 for context, view in zip(contexts, got)
                   if not context["user_id"] and view["assignments"])
    check(sessions and all(a["unit_type"] == "session" for c, v in zip(contexts, got) if not c["user_id"]
                           for a in v["assignments"]), "session-only requests are not bucketed by session")
    # numbers as numbers, booleans as booleans
    kinds = sorted({type(value).__name__ for view in got for value in view["params"].values()})
    check(kinds == ["bool", "float", "int", "str"], f"the params' Python types are {kinds}")
    return got, (f"{USERS} requests ({sessions} assigned by session id): Client.assign = Assign (config version "
                 f"{version}; variants {dict(sorted(counts.items()))}; param types {', '.join(kinds)}); "
                 f"Assign {grpc_seconds:.1f} s, the package {package_seconds:.2f} s with every field read")


# === 4. errors ===


def raises(kind, field, call, what):
    try:
        call()
    except expd_client.ExpdError as error:
        check(type(error) is kind, f"{what} raised {type(error).__name__} ({error}), not {kind.__name__}")
        if field is not None:
            check(getattr(error, "field", None) == field,
                  f"{what} raised {kind.__name__} with field {getattr(error, 'field', None)!r}, not {field!r}")
        return error
    except Exception as error:  # noqa: BLE001 -- any other exception is the failure
        raise Failure(f"{what} raised {type(error).__name__} ({error}), not an ExpdError") from error
    raise Failure(f"{what} raised nothing, not {kind.__name__}")


def errors(client):
    invalid = expd_client.InvalidRequest
    for kind in (invalid, expd_client.NoConfig, expd_client.ConfigTimeout, expd_client.QueueFull):
        check(issubclass(kind, expd_client.ExpdError), f"{kind.__name__} is not an ExpdError")
    check(issubclass(expd_client.ExpdError, Exception), "ExpdError is not an Exception")
    raises(invalid, "user_id", lambda: client.assign(), "assign() without ids")
    raises(invalid, "user_id", lambda: client.assign(None, None, placement=PLACEMENT), "assign(None, None)")
    raises(invalid, "type", lambda: client.log_outcome("teleport", user_id="u"), 'log_outcome("teleport")')
    raises(invalid, "address", lambda: expd_client.Client("127.0.0.1:1"), 'Client("127.0.0.1:1")')
    raises(invalid, "address", lambda: expd_client.Client("http://bad host:1"), 'Client("http://bad host:1")')
    raises(invalid, "token", lambda: expd_client.Client("http://127.0.0.1:1", token="two\nlines"),
           "Client(token=a token with a newline)")
    raises(invalid, "config", lambda: expd_client.Snapshot.from_json("{"), 'Snapshot.from_json("{")')
    raises(invalid, "timestamp", lambda: client.log_outcome("click", user_id="u", timestamp=1e19),
           "log_outcome(timestamp=1e19), past what a clock holds")
    closed = expd_client.Client(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        check(closed.config_version is None, f"a client of a closed port has config version {closed.config_version}")
        raises(expd_client.NoConfig, None, lambda: closed.assign("u-1"), "assign() before any config")
        at = time.monotonic()
        raises(expd_client.ConfigTimeout, None, lambda: closed.wait_for_config(0.2),
               "wait_for_config(0.2) of a closed port")
        waited = time.monotonic() - at
        check(0.2 <= waited < 10, f"wait_for_config(0.2) gave up after {waited:.2f} s")
    finally:
        closed.close(0.5)
    return (f"InvalidRequest .field user_id (no ids), type (teleport), address (127.0.0.1:1, http://bad host:1), "
            f"token (a newline), config ('{{'); "
            f"a closed port: NoConfig before a config, ConfigTimeout after {waited:.2f} s; all ExpdError")


# === 5. a config change, followed ===


def follows_changes(api, client, before):
    contexts = [user_context("py", index) for index in range(USERS)]
    had = sum(1 for view in before for a in view["assignments"] if a["experiment_id"] == RANKING)
    api.pause(RANKING)
    paused_version = api.config_version()
    at = time.monotonic()
    reached = client.wait_for_version(paused_version, timeout=WAIT)
    took = time.monotonic() - at
    check(reached >= paused_version and client.config_version == reached,
          f"wait_for_version({paused_version}) returned {reached}, config_version {client.config_version}")
    after = [package_view(package_assign(client, context, defer_exposure=True)) for context in contexts]
    left = [unit_of(c) for c, view in zip(contexts, after)
            if any(a["experiment_id"] == RANKING for a in view["assignments"])]
    check(not left, f"{len(left)} units still assigned {RANKING} after its pause, e.g. {left[:3]}")
    untouched = [[a for a in variants_of(view) if a[0] == DIVERSITY] for view in before]
    kept = [variants_of(view) for view in after]
    compare_all("the client after the pause", contexts, kept, untouched, f"{DIVERSITY} before it")
    # Assign agrees on the new version (it follows the change on its own).
    sample = contexts[:1_000]
    wait_until(lambda: api.assign(sample[0]).config_version >= reached, f"Assign serves config version {reached}")
    compare_all("Client.assign after the pause", sample, after[:1_000],
                [grpc_view(answer) for answer in api.assign_many(sample)])

    api.resume(RANKING)
    resumed_version = api.config_version()
    client.wait_for_version(resumed_version, timeout=WAIT)
    back = [package_view(package_assign(client, context, defer_exposure=True)) for context in contexts]
    compare_all("the client after the resume", contexts, [variants_of(view) for view in back],
                [variants_of(view) for view in before], "before the pause")
    return back, (f"{RANKING} paused (config version {paused_version}): wait_for_version returned in "
                  f"{took * 1000:.0f} ms and none of its {had} units has it, {DIVERSITY} unchanged, Assign "
                  f"agrees on 1,000; resumed (version {resumed_version}): every unit has its variant back")


# === 6. the README snippet ===


def readme_snippet(api, expd):
    snippet = (HERE / "readme_snippet.py").read_text()
    env = dict(os.environ, EXPD_GRPC_URL=expd.url, EXPD_TOKEN=DATA_PLANE[0],
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    ran = subprocess.run([sys.executable, str(HERE / "readme_snippet.py")], env=env, capture_output=True,
                         text=True, timeout=60)
    check(ran.returncode == 0, f"readme_snippet.py exited with {ran.returncode}:\n{ran.stderr[-3000:]}")
    lines = ran.stdout.strip().split("\n")
    check(len(lines) == 2, f"readme_snippet.py printed {ran.stdout!r}, not two lines")
    printed_assignments, printed_params = (ast.literal_eval(line) for line in lines)
    want = grpc_view(api.assign({"user_id": README_USER, "session_id": README_SESSION, "placement": PLACEMENT,
                                 "page_type": "", "country": "", "device": "", "attributes": {}}))
    check(printed_assignments == [(a["experiment_id"], a["variant"]) for a in want["assignments"]]
          and same_json(printed_params, want["params"]),
          f"readme_snippet.py printed {lines}; Assign gives {want['assignments']}, params {want['params']}")

    where = readme_holds((ROOT / "README.md").read_text(), snippet)
    return f"readme_snippet.py printed Assign's {printed_assignments} and params; {where}"


def readme_holds(readme, snippet):
    """The README's "From Python" section holds the snippet verbatim as a
    python block."""
    section = re.search(r"^## From Python\b.*?(?=^## |\Z)", readme, flags=re.M | re.S)
    check(section is not None, "README.md has no '## From Python' section: the snippet it shows is checked here")
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(0), flags=re.M | re.S)
    check(snippet in blocks,
          "README.md's 'From Python' section has no ```python block that is "
          "tests/python_package/readme_snippet.py verbatim: copy the file into it, or the block into the file")
    return "verbatim in README.md's 'From Python' section"


# === 7. without the admin ===


def snapshot_file_version(path):
    """The config version in the client's snapshot file (a ConfigSnapshot,
    protobuf), or None."""
    from experiments.v1 import config_service_pb2

    if not path.exists():
        return None
    return config_service_pb2.ConfigSnapshot.FromString(path.read_bytes()).config_version


def without_admin(expd, client, snapshot_path, before):
    contexts = [user_context("py", index) for index in range(USERS)]
    version = client.config_version
    # The follower saves the file just after it publishes a version (that
    # is what wait_for_version saw): wait for the save before stopping.
    wait_until(lambda: snapshot_file_version(snapshot_path) == version,
               f"the snapshot file holds config version {version}")
    code = expd.stop()
    check(code == 0, f"expd exited with {code} on SIGTERM")
    same = [package_view(package_assign(client, context, defer_exposure=True)) for context in contexts]
    compare_all("the client with expd stopped", contexts, same, before, "its answers before")

    at = time.monotonic()
    fresh = expd_client.Client(expd.url, token=DATA_PLANE[0], snapshot_path=str(snapshot_path))
    try:
        got_version = fresh.wait_for_config(5)
        took = time.monotonic() - at
        check(got_version == version, f"the new client started from version {got_version}, not {version}")
        sample = contexts[:RESTART_USERS]
        answers = [package_view(package_assign(fresh, context, defer_exposure=True)) for context in sample]
        compare_all("a new client on the snapshot file", sample, answers, before[:RESTART_USERS],
                    "the first client")
    finally:
        fresh.close(0.5)
    return (f"expd stopped (exit {code}): the client answers {USERS} requests as before; a new Client on the "
            f"snapshot file had version {version} in {took * 1000:.0f} ms and answers {RESTART_USERS} the same")


# === 8. events arrive once ===


def events_once(expd, first_version):
    expd.start()
    client = expd_client.Client(expd.url, token=DATA_PLANE[0], log_exposures=True)
    version = client.wait_for_config(WAIT)
    check(version >= first_version,
          f"after the restart a client has config version {version}, before it {first_version}")
    contexts = [user_context("exposed", index, placement=PLACEMENT) for index in range(EXPOSED_USERS)]
    expected = {}
    for context in contexts:
        answer = package_assign(client, context)  # exposures logged: no defer_exposure
        for a in answer.assignments:
            check(a.reason == "bucketed", f"{unit_of(context)}: {a!r} is not bucketed")
            expected[(a.unit_type, unit_of(context), a.experiment_id)] = (a.variant, a.revision)
    outcome_ids = []
    for index, context in enumerate(contexts[:OUTCOMES]):
        event_id = f"py-outcome-{index}"
        outcome_ids.append(event_id)
        client.log_outcome("add_to_cart", user_id=context["user_id"] or None,
                           session_id=context["session_id"] or None, placement=PLACEMENT,
                           page_type="product_detail", item_id=f"sku-{index}", value=19.5 + index,
                           currency="EUR", quantity=1 + index % 3, from_recommendation=True,
                           source_placement=PLACEMENT, event_id=event_id)
        if index == 1:  # the same event twice in a row (most likely one batch)
            client.log_outcome("add_to_cart", user_id=context["user_id"] or None,
                               session_id=context["session_id"] or None, placement=PLACEMENT,
                               page_type="product_detail", item_id=f"sku-{index}", value=19.5 + index,
                               currency="EUR", quantity=1 + index % 3, from_recommendation=True,
                               source_placement=PLACEMENT, event_id=event_id)
    client.flush()
    # A retry of an event already acknowledged, in a later batch.
    retried = contexts[0]
    client.log_outcome("add_to_cart", user_id=retried["user_id"] or None, session_id=retried["session_id"] or None,
                       placement=PLACEMENT, page_type="product_detail", item_id="sku-0", value=19.5,
                       currency="EUR", quantity=1, from_recommendation=True, source_placement=PLACEMENT,
                       event_id=outcome_ids[0])
    client.flush()
    stats = dict(client.stats())
    closed = dict(client.close())
    sent = len(expected) + OUTCOMES + 2
    check(stats["queued"] == sent, f"the sender queued {stats['queued']} events, not {sent}: {stats}")
    check(stats["accepted"] + stats["duplicates"] == sent and stats["dropped"] == 0 and stats["rejected"] == 0,
          f"the sender's counters after flush: {stats} ({sent} sent)")
    check(closed.get("dropped") == 0 and closed.get("rejected") == 0, f"close() answered {closed}")
    try:
        client.log_outcome("click", user_id="after-close")
        raise Failure("log_outcome after close() raised nothing")
    except expd_client.ExpdError:
        pass
    # A client dropped without close() still sends what it queued.
    dropped = expd_client.Client(expd.url, token=DATA_PLANE[0], log_exposures=False)
    dropped_ids = [f"py-dropped-{index}" for index in range(DROPPED_OUTCOMES)]
    for event_id in dropped_ids:
        dropped.log_outcome("page_view", user_id=f"dropped-{event_id}", placement=PLACEMENT, event_id=event_id)
    del dropped
    gc.collect()
    code = expd.stop()
    check(code == 0, f"expd exited with {code} on SIGTERM")

    events = expd.data / "events"
    wal = sorted(p.name for p in (events / "wal").glob("*.wal")) if (events / "wal").exists() else []
    check(not wal, f"a graceful stop left log segments not rolled into Parquet: {wal}")
    files = {kind: sorted((events / kind).glob("*/*/*.parquet")) for kind in ("exposures", "outcomes")}
    check(all(files.values()), f"Parquet files: {[(kind, len(found)) for kind, found in files.items()]}")
    partition = files["exposures"][0].relative_to(events)
    check(re.fullmatch(r"exposures/date=\d{4}-\d\d-\d\d/hour=\d\d/part-[^/]+\.parquet", str(partition)),
          f"an exposure file outside the Hive layout: {partition}")

    def query(sql):
        return duckdb.sql(sql).fetchall()

    exposures = query(f"""
        SELECT event_id, experiment_id, variant, unit_type,
               CASE unit_type WHEN 'user' THEN user_id ELSE session_id END AS unit, revision, placement
        FROM read_parquet('{events}/exposures/*/*/*.parquet', hive_partitioning = true)""")
    outcomes = query(f"""
        SELECT event_id, type, user_id, session_id, item_id, value, quantity
        FROM read_parquet('{events}/outcomes/*/*/*.parquet', hive_partitioning = true)""")

    ids = [row[0] for row in exposures]
    check(len(ids) == len(set(ids)), "an exposure event id appears twice in Parquet")
    seen = {}
    for _, experiment_id, variant_name, unit_type, unit, revision, placement in exposures:
        if unit.startswith("exposed-"):
            seen.setdefault((unit_type, unit, experiment_id), []).append((variant_name, revision, placement))
    twice = {key: rows for key, rows in seen.items() if len(rows) > 1}
    check(not twice, f"{len(twice)} (unit, experiment) pairs have several exposures, "
                     f"e.g. {next(iter(twice.items()), None)}")
    missing = sorted(set(expected) - set(seen))
    extra = sorted(set(seen) - set(expected))
    check(not missing and not extra,
          f"exposures in Parquet: {len(missing)} assignments without one (e.g. {missing[:3]}), {len(extra)} "
          f"without an assignment (e.g. {extra[:3]})")
    wrong = [(key, seen[key][0], expected[key]) for key in expected
             if seen[key][0] != (expected[key][0], expected[key][1], PLACEMENT)]
    check(not wrong, f"{len(wrong)} exposures disagree with their assignment, e.g. {wrong[:2]}")
    deferred = [row for row in exposures if row[4].startswith("py-")]
    check(not deferred, f"{len(deferred)} exposures of check 3's users (all with defer_exposure), e.g. {deferred[:2]}")

    counted = {}
    for event_id, *_ in outcomes:
        counted[event_id] = counted.get(event_id, 0) + 1
    mine = {event_id: count for event_id, count in counted.items() if event_id.startswith("py-outcome-")}
    check(set(mine) == set(outcome_ids),
          f"outcome ids in Parquet: {len(set(outcome_ids) - set(mine))} missing "
          f"(e.g. {sorted(set(outcome_ids) - set(mine))[:3]}), {len(set(mine) - set(outcome_ids))} unexpected")
    repeated = {event_id: count for event_id, count in mine.items() if count != 1}
    check(not repeated, f"outcome ids not exactly once in Parquet: {repeated}")
    flushed = {event_id for event_id in counted if event_id.startswith("py-dropped-")}
    check(flushed == set(dropped_ids),
          f"a client dropped without close() lost {len(set(dropped_ids) - flushed)} of {DROPPED_OUTCOMES} outcomes")
    first = next(row for row in outcomes if row[0] == "py-outcome-1")
    want_first = ("add_to_cart", contexts[1]["user_id"] or None, contexts[1]["session_id"] or None, "sku-1", 20.5, 2)
    check(tuple(first[1:]) == want_first, f"py-outcome-1 in Parquet is {first[1:]}, not {want_first}")
    users = sum(1 for c in contexts if c["user_id"])
    return (f"restarted at config version {version}; {len(expected)} exposures of {EXPOSED_USERS} users "
            f"({users} by user id, {EXPOSED_USERS - users} by session id) and {OUTCOMES} outcome ids (2 sent "
            f"twice) each exactly once in {len(files['exposures'])} + {len(files['outcomes'])} Parquet files; "
            f"sender: {stats['accepted']} accepted, {stats['duplicates']} duplicates; no exposure of the "
            f"deferred users; a client dropped without close() sent its {DROPPED_OUTCOMES} outcomes")


# === the run ===


def run(expd, work):
    steps = []

    def step(name, function, *args):
        at = time.monotonic()
        result = function(*args)
        summary, value = (result, None) if isinstance(result, str) else (result[1], result[0])
        steps.append(name)
        print(f"ok {len(steps)} - {name}: {summary} ({time.monotonic() - at:.1f} s)", flush=True)
        return value

    step("published vectors", published_vectors)
    step("type stubs ship", stubs_ship)

    generate_stubs(work / "stubs")
    expd.start()
    api = Api(expd.grpc_addr)
    ranking, diversity = experiments(api.pb)
    api.create_and_start(ranking, "Python package test")
    api.create_and_start(diversity, "Python package test")
    version = api.config_version()
    wait_until(lambda: api.assign(user_context("probe", 1)).config_version >= version,
               f"Assign serves config version {version}")
    snapshot_path = work / "client" / "expd-config.pb"
    client = expd_client.Client(expd.url, token=DATA_PLANE[0], snapshot_path=str(snapshot_path))
    try:
        check(client.wait_for_version(version, timeout=WAIT) == version,
              f"the client did not reach config version {version}")
        before = step("the package answers as Assign", agreement, api, client, version)
        step("errors", errors, client)
        before = step("a config change reaches the client", follows_changes, api, client, before)
        step("the README snippet", readme_snippet, api, expd)
        step("answers without the admin", without_admin, expd, client, snapshot_path, before)
        step("exposures and outcomes arrive once", events_once, expd, client.config_version)
    finally:
        client.close(0.5)
        api.close()


def main():
    return expd_harness.main("python package", "every check passed", run, (EDITOR, DATA_PLANE),
                             boolean_param=True, args=("--events-flush-interval", "1s"))


if __name__ == "__main__":
    sys.exit(main())
