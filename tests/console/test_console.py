#!/usr/bin/env python3
"""The console in a real browser, against a real expd.

Starts the expd binary (env EXPD_BIN, default target/debug/expd under the
repository root) on free loopback ports with a temporary data directory and
a tokens file (an editor, a viewer, a data-plane token), then drives
Debian's chromium headless through /usr/bin/chromedriver with Selenium, and
calls the gRPC services with grpcio (stubs generated from proto/ by
grpcio-tools into a temporary directory):

  1. sign in as the editor; create an experiment through the form with two
     mistakes, see both violations next to their fields, fix them, save
  2. start, ramp, pause and resume it with the status buttons
  3. roll it back through the preview page
  4. a QA override: Assign answers its variant; deleted, the unit's own
  5. simulated traffic (Assign, LogExposures, LogOutcomes over the past
     hours): the results page shows GetResults' numbers, and the lift chart
     draws its line and band
  6. a second experiment with a skewed split shows the sample-ratio banner
  7. a viewer sees no change controls, and a forged POST is refused
  8. a stale edit is explained and writes nothing
  9. an edit saved unchanged changes nothing
 10. a holdout on the second experiment's placement: Assign holds its
     share out (reason HOLDOUT); /holdouts, reached from the navigation,
     links to its results, whose table shows holdout and rest with
     GetResults' numbers; an unknown holdout is a 404; End holdout gives
     the experiment back

Screenshots go to target/console-screenshots/; with CONSOLE_UPDATE_DOCS=1
the results page's is also copied to docs/console-results.png (the
README's picture). Prints one line per scenario; exits 1
on the first failure (with expd's log).

Needs: python3 with selenium, grpcio and grpcio-tools importable (grpcio
is also looked for in target/python-deps/grpcio, where the Rust tests
install it), chromium and /usr/bin/chromedriver.
"""

import json
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]

try:
    import grpc  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "target/python-deps/grpcio"))
    import grpc

sys.path.insert(0, str(ROOT / "tests/python"))
import expd_harness
from expd_harness import Expd, Failure, Services, check, expd_binary, generate_stubs
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

EDITOR = ("console-editor-token-7d9f2c41", "alice@example.com", "editor")
VIEWER = ("console-viewer-token-3b1e9d7c", "bob@example.com", "viewer")
DATA_PLANE = ("console-dataplane-token-9c0d5e1f", "rec-service", "data_plane")

EXPERIMENT = "ymal_style_rerank"
SKEWED = "cart_upsell_srm"
ROUND_TRIP = "home_pool_round_trip"
PLACEMENT = "you_may_also_like"
SKEWED_PLACEMENT = "cart_upsell"
HOLDOUT = "cart_holdout_2027h1"
HOLDOUT_SHARE = 2000  # basis points: 20%

SCREENSHOTS = ROOT / "target/console-screenshots"
RESULTS_IMAGE = ROOT / "docs/console-results.png"

WIDTH, HEIGHT = 1280, 1000
WAIT = 15  # seconds a page or the assigner gets to show a change
REL_TOL = 1e-9

CHART_PIXELS = """
const canvas = document.querySelector('#lift-chart canvas');
if (!canvas) return {error: 'no canvas'};
const ctx = canvas.getContext('2d');
const {data} = ctx.getImageData(0, 0, canvas.width, canvas.height);
const [R, G, B] = [37, 99, 235];
let line = 0, band = 0;
for (let i = 0; i < data.length; i += 4) {
  const r = data[i], g = data[i + 1], b = data[i + 2], a = data[i + 3];
  const near = (tol) => Math.abs(r - R) <= tol && Math.abs(g - G) <= tol && Math.abs(b - B) <= tol;
  if (a >= 230 && near(16)) line++;
  else if (a >= 30 && a <= 80 && near(24)) band++;
}
return {line, band, w: canvas.width, h: canvas.height};
"""

# A POST from the page itself (same origin, the viewer's cookie); the
# answer's status and text.
FORGED_POST = """
const [url, body, done] = arguments;
fetch(url, {method: 'POST', body: new URLSearchParams(body), credentials: 'same-origin'})
  .then(async (response) => done({status: response.status, text: await response.text()}))
  .catch((error) => done({status: -1, text: String(error)}));
"""


# A GET from the page itself; the answer's status and text.
FETCH = """
const [url, done] = arguments;
fetch(url, {credentials: 'same-origin'})
  .then(async (response) => done({status: response.status, text: await response.text()}))
  .catch((error) => done({status: -1, text: String(error)}));
"""


def close(a, b):
    return a == b or abs(a - b) <= REL_TOL * max(abs(a), abs(b))


def utc(at):
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# === gRPC ===


class Api(Services):
    """The gRPC services, each call with the token its role needs."""

    def __init__(self, address):
        super().__init__(address, EDITOR[0], DATA_PLANE[0])
        self.position = 0

    def get(self, experiment_id, token=EDITOR[0]):
        return self.admin.GetExperiment(
            self.admin_pb.GetExperimentRequest(id=experiment_id),
            metadata=self.auth(token), timeout=10,
        ).experiment

    def assign_request(self, user_id, placement=PLACEMENT):
        return self.assign_pb.AssignRequest(
            user_id=user_id,
            context=self.assign_pb.RequestContext(placement=placement, country="US", device="mobile"),
            # The test logs exposures itself, with the times it chooses.
            defer_exposure=True,
        )

    def assign(self, user_id, placement=PLACEMENT):
        return self.assigner.Assign(
            self.assign_request(user_id, placement), metadata=self.auth(DATA_PLANE[0]), timeout=10
        )

    def assign_many(self, users, placement):
        """Each user's Assign answer, 250 calls in flight at a time."""
        return dict(zip(users, self.assign_all([self.assign_request(user, placement) for user in users])))

    def log(self, method, field, events):
        for start in range(0, len(events), 5000):
            batch = events[start:start + 5000]
            request = (self.event_pb.LogExposuresRequest(exposures=batch) if field == "exposures"
                       else self.event_pb.LogOutcomesRequest(outcomes=batch))
            answer = method(request, metadata=self.auth(DATA_PLANE[0]), timeout=30)
            check(not answer.rejections,
                  f"{field} refused: {[(r.index, r.field, r.reason) for r in answer.rejections[:5]]}")
            check(answer.accepted_count == len(batch),
                  f"{answer.accepted_count} of {len(batch)} {field} accepted")
            self.position = max(self.position, answer.position)

    def log_exposures(self, exposures):
        self.log(self.events.LogExposures, "exposures", exposures)

    def log_outcomes(self, outcomes):
        self.log(self.events.LogOutcomes, "outcomes", outcomes)

    def get_results(self, experiment_id, min_position):
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.results.GetResults(
                    self.results_pb.GetResultsRequest(experiment_id=experiment_id, min_position=min_position),
                    metadata=self.auth(EDITOR[0]), timeout=10,
                )
            except grpc.RpcError as error:
                # UNAVAILABLE: not counted that far yet; it says so, retry.
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise


def wait_until(condition, message):
    """Polls `condition` (for what is not a page: gRPC) until it is truthy."""
    return expd_harness.wait_until(condition, message, timeout=WAIT, interval=0.2)


# === the browser ===


class Browser:
    def __init__(self, base):
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", f"--window-size={WIDTH},{HEIGHT}",
                         "--disable-dev-shm-usage", "--force-device-scale-factor=1"):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        self.base = base
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / "failure.png").unlink(missing_ok=True)  # of an earlier run

    def quit(self):
        self.driver.quit()

    def wait(self, condition, message, timeout=WAIT):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(condition)
        except TimeoutException:
            raise Failure(f"{message} (after {timeout} s, at {self.driver.current_url})") from None

    def open(self, path):
        self.driver.get(self.base + path)
        self.loaded()

    def loaded(self):
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete", "page loads")

    def path(self):
        return self.driver.current_url[len(self.base):]

    def submit(self, button):
        """Clicks a button or link and waits for the next page: one whose
        window does not carry the mark set on this one."""
        self.driver.execute_script("window.__leaving = true")
        button.click()

        def arrived(driver):
            try:
                return driver.execute_script(
                    "return !window.__leaving && document.readyState === 'complete'")
            except WebDriverException:  # between the two pages
                return False

        self.wait(arrived, "the next page arrives")

    def find(self, css, within=None):
        found = (within or self.driver).find_elements(By.CSS_SELECTOR, css)
        check(found, f"no {css} on {self.path()}")
        return found[0]

    def all(self, css, within=None):
        return (within or self.driver).find_elements(By.CSS_SELECTOR, css)

    def absent(self, css, why):
        check(not self.all(css), f"{css} is shown on {self.path()}: {why}")

    def text(self, css):
        return self.find(css).text.strip()

    def fill(self, name, value, form="#experiment-form"):
        field = self.find(f'{form} [name="{name}"]')
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        else:
            field.clear()
            field.send_keys(value)

    def screenshot(self, name, copy_to=None):
        """A full-page screenshot, 1280 wide."""
        driver = self.driver
        height = driver.execute_script(
            "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
        driver.set_window_size(WIDTH, max(height, HEIGHT))
        # The window may have chrome: grow it by what the viewport misses.
        missing = height - driver.execute_script("return window.innerHeight")
        if missing > 0:
            driver.set_window_size(WIDTH, max(height, HEIGHT) + missing)
        path = SCREENSHOTS / f"{name}.png"
        check(driver.save_screenshot(str(path)), f"screenshot {path} not written")
        if copy_to:
            copy_to.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy_to)
        driver.set_window_size(WIDTH, HEIGHT)

    def sign_in(self, token, identity, role):
        self.open("/sign-in")
        self.fill("token", token, form="#sign-in-form")
        self.submit(self.find("#sign-in"))
        check(self.path().startswith("/experiments"), f"signing in as {role} lands on {self.path()}")
        shown = self.text("#signed-in-as")
        check(shown == f"{identity} ({role})", f"#signed-in-as says {shown!r}, not {identity} ({role})")

    def sign_out(self):
        self.submit(self.find("#sign-out"))
        check(self.path().startswith("/sign-in"), f"signing out lands on {self.path()}")


# === the scenarios ===


def history_top(browser):
    row = browser.find("#history tbody tr")
    return {
        "revision": int(row.get_attribute("data-revision")),
        "action": browser.find("td.action", row).text.strip(),
        "author": browser.find("td.author", row).text.strip(),
        "reason": browser.find("td.reason", row).text.strip(),
        "fields": [li.get_attribute("data-field") for li in browser.all("td.diff ul.diff li", row)],
        "row": row,
    }


def create_with_mistakes(browser, api):
    browser.sign_in(*EDITOR)
    browser.submit(browser.find("#new-experiment"))
    check(browser.path() == "/experiments/new", f"#new-experiment opens {browser.path()}")
    # Started 6 hours ago: the traffic of scenario 5 (the past hours) falls
    # inside the schedule, as the sanity checks want.
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=6)
    for name, value in [
        ("id", EXPERIMENT),
        ("name", "YMAL: style re-ranking"),
        ("owner", EDITOR[1]),
        ("hypothesis", "Re-ranking you-may-also-like by style raises add-to-cart rate"),
        ("description", "Model v3 with style and price re-ranking"),
        ("traffic_percent", "100"),
        ("bucketing_unit", "user_or_session"),
        ("eligibility.placements", PLACEMENT),
        ("schedule.start_time", utc(start)),
        ("metrics.primary_metric", "add_to_cart_rate"),
        ("metrics.secondary_metrics", "ctr, conversion_rate"),
        ("control_variant", "control"),
        ("variants[0].name", "control"),
        ("variants[0].weight", "60"),  # mistake: 60 + 50 is not 100
        ("variants[0].params.model_version", "v2"),
        ("variants[1].name", "treatment"),
        ("variants[1].weight", "50"),
        ("variants[1].params.model_version", "v3"),
        ("variants[1].params.rerank_weight_price", "0.2"),
        ("variants[1].params.rerank_weight_style", "2"),  # mistake: the schema's range is 0 to 1
    ]:
        browser.fill(name, value)
    browser.submit(browser.find("#validate"))

    style = "variants[1].params.rerank_weight_style"
    listed = sorted(li.get_attribute("data-field") for li in browser.all("ul#violations li"))
    check(listed == sorted(["variants", style]),
          f"Validate lists the violations {listed}, expected exactly 'variants' and {style!r}")
    span = browser.find(f'span.violation[data-field="{style}"]')
    holder = span.find_element(By.XPATH, "..")
    check(holder.tag_name == "div" and "input" in holder.get_attribute("class").split(),
          f"the violation of {style} is not in a div.input")
    check(browser.all(f'[name="{style}"]', holder), f"the violation of {style} is not next to its input")
    check("1" in span.text, f"the violation of {style} does not give the range: {span.text!r}")
    weights = browser.driver.find_elements(
        By.XPATH,
        "//h2[normalize-space()='Variants']/following-sibling::*[1]"
        "//span[contains(@class,'violation')][@data-field='variants']",
    )
    check(weights, "the weights violation (field 'variants') is not under the Variants heading")
    heading = browser.driver.find_element(By.XPATH, "//h2[normalize-space()='Variants']").rect
    below = weights[0].rect
    check(below["y"] >= heading["y"] + heading["height"] and below["x"] < heading["x"] + heading["width"],
          f"the weights violation at {below} is not under the Variants heading at {heading}")
    check("100" in weights[0].text, f"the weights violation does not say they must sum to 100: {weights[0].text!r}")
    kept = browser.find('#experiment-form [name="variants[0].weight"]').get_attribute("value")
    check(kept == "60", f"the form did not keep what was typed (weight {kept!r})")
    browser.screenshot("create-violations")

    browser.fill("variants[0].weight", "50")
    browser.fill(style, "0.6")
    browser.submit(browser.find("#validate"))
    check(browser.all("#valid"), f"Validate after the fixes shows no #valid: {browser.text('main')[:500]}")
    browser.absent(".violation", "no violation is left")

    browser.submit(browser.find("#save"))
    check(browser.path().startswith(f"/experiments/{EXPERIMENT}"), f"Save lands on {browser.path()}")
    check(browser.text("h1") == "YMAL: style re-ranking", f"the experiment page's h1 is {browser.text('h1')!r}")
    check(browser.text("#status") == "draft", f"#status is {browser.text('#status')!r}")
    check(browser.text("#revision") == "1", f"#revision is {browser.text('#revision')!r}")
    stored = api.get(EXPERIMENT)
    check(stored.variants[1].params["rerank_weight_style"] == 0.6,
          f"stored rerank_weight_style is {stored.variants[1].params['rerank_weight_style']}")
    return "create form: 2 violations shown by their fields, fixed, #valid, saved as revision 1"


def move(browser, action, reason, **fields):
    form = browser.find(f'section#moves form.move[data-action="{action}"]')
    for name, value in fields.items():
        field = browser.find(f'[name="{name}"]', form)
        field.clear()
        field.send_keys(value)
    browser.find('[name="reason"]', form).send_keys(reason)
    browser.submit(browser.find('button[type="submit"]', form))
    check(browser.path().startswith(f"/experiments/{EXPERIMENT}"), f"{action} lands on {browser.path()}")
    browser.absent("#error", f"{action} was refused: {browser.text('main')[:300]}")
    return history_top(browser)


def lifecycle(browser, api):
    expected = [
        ("start", "launching to everyone on YMAL", {}, "running", "100%", 2, "start", ["status"]),
        ("ramp", "holding at 40% while latency is checked", {"traffic_percent": "40"}, "running", "40%", 3,
         "update", ["traffic_percent"]),
        ("pause", "pausing for a model redeploy", {}, "paused", "40%", 4, "pause", ["status"]),
        ("resume", "model redeployed", {}, "running", "40%", 5, "resume", ["status"]),
    ]
    for action, reason, fields, status, traffic, revision, verb, changed in expected:
        top = move(browser, action, reason, **fields)
        check(browser.text("#status") == status, f"after {action}, #status is {browser.text('#status')!r}, not {status}")
        check(browser.text("#traffic") == traffic,
              f"after {action}, #traffic is {browser.text('#traffic')!r}, not {traffic}")
        check(browser.text("#revision") == str(revision), f"after {action}, #revision is {browser.text('#revision')!r}")
        check(top["revision"] == revision and top["action"] == verb,
              f"after {action}, the newest history row is revision {top['revision']} {top['action']!r}")
        check(top["reason"] == reason and top["author"] == EDITOR[1],
              f"after {action}, the history row says {top['author']!r}: {top['reason']!r}")
        for field in changed:
            check(field in top["fields"], f"after {action}, the history diff lists {top['fields']}, not {field}")
        if action == "ramp":
            text = browser.find('li[data-field="traffic_percent"]', top["row"]).text
            check("100" in text and "40" in text, f"the ramp's diff says {text!r}")
    rows = len(browser.all("#history tbody tr"))
    check(rows == 5, f"#history has {rows} rows after 4 moves, not 5")
    browser.screenshot("experiment")
    return "start, ramp to 40%, pause, resume: #status, #traffic and history rows follow"


def rollback(browser, api):
    browser.submit(browser.find('a.rollback[data-to="2"]'))
    check(browser.path() == f"/experiments/{EXPERIMENT}/rollback/2", f"the rollback link opens {browser.path()}")
    preview = [li.get_attribute("data-field") for li in browser.all("#rollback-diff ul.diff li")]
    check("traffic_percent" in preview, f"#rollback-diff lists {preview}, not traffic_percent")
    text = browser.find('#rollback-diff li[data-field="traffic_percent"]').text
    check("40" in text and "100" in text, f"#rollback-diff says {text!r} for traffic_percent")
    browser.screenshot("rollback-preview")
    browser.find('#rollback-form [name="reason"]').send_keys("latency is fine: back to full traffic")
    browser.submit(browser.find("#confirm-rollback"))
    check(browser.path().startswith(f"/experiments/{EXPERIMENT}"), f"the rollback lands on {browser.path()}")
    browser.absent("#error", f"the rollback was refused: {browser.text('main')[:300]}")
    top = history_top(browser)
    check(top["revision"] == 6 and top["action"].startswith("rollback"),
          f"the newest history row is revision {top['revision']} {top['action']!r}, not 6 rollback")
    check("traffic_percent" in top["fields"], f"the rollback's diff lists {top['fields']}, not traffic_percent")
    check(browser.text("#traffic") == "100%", f"after the rollback #traffic is {browser.text('#traffic')!r}")
    check(browser.text("#status") == "running", f"after the rollback #status is {browser.text('#status')!r}")
    # Back at 100%, Assign admits every unit (20 of 20 at 40% is 1 in 10^8).
    probes = [f"probe-{index}" for index in range(20)]
    wait_until(lambda: all(bucketed(answer) for answer in api.assign_many(probes, PLACEMENT).values()),
               "Assign admits every unit after the rollback to 100%")
    return f"rollback to revision 2 previewed and written as revision 6 ({top['action']}, diff {top['fields']})"


def bucketed(answer, experiment=EXPERIMENT):
    for assignment in answer.assignments:
        if assignment.experiment_id == experiment:
            return assignment
    return None


def overrides(browser, api):
    # A unit of the experiment (at 100%, every one) and the variant it
    # would not get on its own.
    unit = "qa-user-1"
    own = wait_until(lambda: bucketed(api.assign(unit)), f"Assign puts {unit} in {EXPERIMENT}").variant
    other = "treatment" if own == "control" else "control"
    browser.open(f"/experiments/{EXPERIMENT}/overrides")
    browser.fill("unit_type", "user", form="#override-form")
    browser.fill("unit_id", unit, form="#override-form")
    browser.fill("variant", other, form="#override-form")
    browser.fill("reason", "checking the other ranking on my phone", form="#override-form")
    browser.submit(browser.find("#add-override"))
    browser.absent("#error", f"adding the override was refused: {browser.text('main')[:300]}")
    row = browser.find(f'#overrides tr[data-unit="{unit}"]')
    shown = browser.find("td.variant", row).text.strip()
    check(shown == other, f"the override row shows variant {shown!r}, not {other}")
    browser.screenshot("overrides")

    def answers(variant, reason):
        assignment = bucketed(api.assign(unit))
        return assignment and assignment.variant == variant and assignment.reason == reason

    wait_until(lambda: answers(other, api.assign_pb.ASSIGNMENT_REASON_OVERRIDE),
               f"Assign answers the override's variant {other} for {unit}")
    browser.submit(browser.find(f'form.delete-override button[data-delete="{unit}"]'))
    browser.absent(f'#overrides tr[data-unit="{unit}"]', "the override was deleted")
    wait_until(lambda: answers(own, api.assign_pb.ASSIGNMENT_REASON_BUCKETED),
               f"Assign answers {unit}'s own bucket {own} after the delete")
    return f"override {unit} -> {other}: Assign follows it; deleted, back to its own {own}"


def simulate(api, experiment, users, placement, start, end, rng, keep=lambda variant: True, outcomes=True,
             group=None):
    """Assigns `users`, logs exposures between `start` and `end` (in time
    order, an hour at a time) and outcomes after them; the variant of each
    exposed unit. `group` reads an Assign answer as the unit's variant,
    unit type and revision of `experiment` (None: not exposed); by default
    its bucketed assignment."""
    answers = api.assign_many(users, placement)
    group = group or (lambda answer: bucketed(answer, experiment))
    units = []
    for user in users:
        assignment = group(answers[user])
        if assignment and keep(assignment.variant):
            units.append((user, assignment))
    span = (end - start).total_seconds()
    exposures, events = [], []
    for user, assignment in units:
        at = start + timedelta(seconds=rng.uniform(0, span))
        exposures.append((at, api.event_pb.Exposure(
            event_id=f"x-{experiment}-{user}", experiment_id=experiment, variant=assignment.variant,
            user_id=user, session_id=f"s-{user}", unit_type=assignment.unit_type,
            placement=placement, page_type="pdp", revision=assignment.revision)))
        if not outcomes:
            continue
        treatment = assignment.variant != "control"
        pb = api.pb
        for _ in range(rng.randint(1, 3)):
            seen = at + timedelta(seconds=rng.uniform(1, 1200))
            items = [f"sku-{rng.randrange(400)}" for _ in range(6)]
            events.append((seen, user, dict(type=pb.OUTCOME_TYPE_IMPRESSION, item_ids=items)))
            if rng.random() < (0.22 if treatment else 0.18):
                events.append((seen + timedelta(seconds=5), user,
                               dict(type=pb.OUTCOME_TYPE_CLICK, item_id=items[0])))
        if rng.random() < (0.14 if treatment else 0.11):
            added = at + timedelta(seconds=rng.uniform(30, 1500))
            events.append((added, user, dict(type=pb.OUTCOME_TYPE_ADD_TO_CART, item_id="sku-7", quantity=1)))
            if rng.random() < 0.4:
                events.append((added + timedelta(seconds=60), user,
                               dict(type=pb.OUTCOME_TYPE_PURCHASE, value=round(rng.uniform(20, 120), 2),
                                    currency="USD", quantity=1)))
    outcome_list = []
    for index, (when, user, fields) in enumerate(events):
        outcome_list.append((when, api.event_pb.Outcome(
            event_id=f"o-{experiment}-{index}", user_id=user, session_id=f"s-{user}",
            placement=placement, page_type="pdp", from_recommendation=True,
            source_placement=placement, **fields)))
    # Hour by hour, exposures then outcomes: the analysis takes each
    # hour's snapshot as event time crosses it.
    hour = lambda when: when.replace(minute=0, second=0, microsecond=0)
    hours = sorted({hour(when) for when, _ in exposures} | {hour(when) for when, _ in outcome_list})
    for current in hours:
        batch = sorted((e for e in exposures if hour(e[0]) == current), key=lambda e: e[0])
        for when, exposure in batch:
            exposure.timestamp.FromDatetime(when)
        if batch:
            api.log_exposures([exposure for _, exposure in batch])
        batch = sorted((o for o in outcome_list if hour(o[0]) == current), key=lambda o: o[0])
        for when, outcome in batch:
            outcome.timestamp.FromDatetime(when)
        if batch:
            api.log_outcomes([outcome for _, outcome in batch])
    counts = {}
    for _, assignment in units:
        counts[assignment.variant] = counts.get(assignment.variant, 0) + 1
    return counts, len(outcome_list)


def counted_through(browser, path, position):
    """Opens `path` and reloads it until its view has counted through
    `position` (the page refreshes its view in the background)."""
    browser.open(path)

    def reached(driver):
        found = driver.find_elements(By.CSS_SELECTOR, "#counted-through")
        if found and int(found[0].get_attribute("data-position") or 0) >= position:
            return True
        driver.refresh()
        return False

    browser.wait(reached, f"{path} counts through log position {position}", timeout=60)
    browser.loaded()


def expect_value(cell, what, computed, value):
    shown = cell.get_attribute("data-value")
    if not computed:
        check(shown == "", f"{what}: data-value is {shown!r} where GetResults computed nothing")
        return
    check(shown not in (None, ""), f"{what}: data-value is empty, GetResults says {value!r}")
    check(close(float(shown), value), f"{what}: data-value {shown} is not GetResults' {value!r}")


def metrics_equal_results(browser, api, answer):
    """Checks that every row of the page's metrics table shows GetResults'
    `answer` and that it lacks none; the rows, and GetResults' (variant,
    metric) -> (variant, metric result)."""
    computed = api.results_pb.COMPARISON_STATUS_COMPUTED
    expected = {}
    for variant in answer.variants:
        for metric in variant.metrics:
            expected[(variant.variant, metric.metric)] = (variant, metric)
    rows = browser.all("table#metrics tr[data-variant][data-metric]")
    seen = set()
    for row in rows:
        key = (row.get_attribute("data-variant"), row.get_attribute("data-metric"))
        check(key in expected, f"the page has a row {key} GetResults does not")
        seen.add(key)
        variant, metric = expected[key]
        what = f"{key[1]} of {key[0]}"
        is_computed = metric.comparison_status == computed
        units = browser.find("td.units", row).get_attribute("data-value")
        check(units == str(variant.exposed_units), f"{what}: units {units} is not GetResults' {variant.exposed_units}")
        expect_value(browser.find("td.value", row), f"{what} value", not metric.value_undefined, metric.value)
        expect_value(browser.find("td.difference", row), f"{what} difference", is_computed, metric.absolute_difference)
        interval = browser.find("td.interval", row)
        for bound in ("lower", "upper"):
            shown = interval.get_attribute(f"data-{bound}")
            if is_computed:
                value = getattr(metric.absolute_interval, bound)
                check(shown and close(float(shown), value), f"{what}: interval {bound} {shown!r} is not {value!r}")
            else:
                check(not shown, f"{what}: interval {bound} {shown!r} where GetResults computed nothing")
        expect_value(browser.find("td.lift", row), f"{what} lift", is_computed and not metric.relative_undefined,
                     metric.relative_difference)
        expect_value(browser.find("td.p", row), f"{what} p", is_computed, metric.p_value)
        expect_value(browser.find("td.p-adjusted", row), f"{what} adjusted p", is_computed, metric.adjusted_p_value)
    check(seen == set(expected), f"GetResults has rows the page lacks: {sorted(set(expected) - seen)}")
    return rows, expected


def results(browser, api):
    rng = random.Random(20261206)
    now = datetime.now(timezone.utc)
    users = [f"user-{index}" for index in range(4000)]
    counts, outcomes = simulate(api, EXPERIMENT, users, PLACEMENT,
                                now - timedelta(hours=4, minutes=30), now - timedelta(minutes=35), rng)
    check(sum(counts.values()) >= 3900, f"only {counts} of 4000 users were assigned to {EXPERIMENT}")
    position = api.position
    check(position > 0, "EventService answered position 0")
    answer = api.get_results(EXPERIMENT, position)
    check(answer.counted_position >= position, f"GetResults counted through {answer.counted_position} < {position}")

    counted_through(browser, f"/experiments/{EXPERIMENT}/results", position)
    shown_position = int(browser.find("#counted-through").get_attribute("data-position"))
    check(shown_position == answer.counted_position,
          f"the page counted through {shown_position}, GetResults through {answer.counted_position}")
    browser.absent("#srm-banner", "the first experiment's split matches its weights")

    rows, expected = metrics_equal_results(browser, api, answer)
    computed = api.results_pb.COMPARISON_STATUS_COMPUTED
    primary = expected[("treatment", "add_to_cart_rate")][1]
    check(primary.comparison_status == computed, "GetResults did not compute add_to_cart_rate for treatment")

    timeline = json.loads(browser.driver.execute_script(
        "return document.getElementById('timeline-data').textContent"))
    lifts = [value for value in timeline["treatments"][0]["lift"] if value is not None]
    check(len(timeline["times"]) >= 3 and len(lifts) >= 2,
          f"the timeline has {len(timeline['times'])} points, {len(lifts)} with a lift: too few for a chart")
    counted = {}

    def drawn(driver):
        counted.update(driver.execute_script(CHART_PIXELS))
        return counted.get("line", 0) > 100 and counted.get("band", 0) > 100

    try:
        WebDriverWait(browser.driver, WAIT, poll_frequency=0.2).until(drawn)
    except TimeoutException:
        raise Failure(f"the lift chart did not draw a line and a band (> 100 pixels each): {counted}") from None
    pixels = counted
    # The README's picture is refreshed only when asked: every run would
    # otherwise rewrite a committed file.
    update_docs = os.environ.get("CONSOLE_UPDATE_DOCS") == "1"
    browser.screenshot("results", copy_to=RESULTS_IMAGE if update_docs else None)
    return (f"{sum(counts.values())} units {counts}, {outcomes} outcomes: {len(rows)} metric rows equal GetResults "
            f"at position {position}; chart {len(timeline['times'])} points, line {pixels['line']} px, "
            f"band {pixels['band']} px")


def skewed_split(browser, api):
    pb = api.pb
    experiment = pb.Experiment(
        id=SKEWED, name="Cart upsell: bundle suggestions", owner=EDITOR[1],
        hypothesis="Bundles in the cart raise add-to-cart rate",
        variants=[pb.Variant(name="control", weight=50), pb.Variant(name="treatment", weight=50)],
        control_variant="control", traffic_percent=100,
        bucketing_unit=pb.BUCKETING_UNIT_USER_OR_SESSION,
        eligibility=pb.Eligibility(placements=[SKEWED_PLACEMENT]),
        metrics=pb.MetricsConfig(primary_metric="add_to_cart_rate"),
    )
    api.create_and_start(experiment, "a second experiment")
    wait_until(lambda: bucketed(api.assign("probe-user", SKEWED_PLACEMENT), SKEWED),
               f"Assign serves {SKEWED} once it is started")
    rng = random.Random(7)
    now = datetime.now(timezone.utc)
    # Exposure logging "broken" for two thirds of the treatment's units.
    counts, _ = simulate(
        api, SKEWED, [f"cart-user-{index}" for index in range(900)], SKEWED_PLACEMENT,
        now - timedelta(minutes=30), now - timedelta(minutes=5), rng,
        keep=lambda variant: variant == "control" or rng.random() < 0.33, outcomes=False)
    position = api.position
    counted_through(browser, f"/experiments/{SKEWED}/results", position)
    check(browser.all("#srm-banner"), f"no #srm-banner on {SKEWED}'s results with exposed units {counts}")
    text = browser.text("#srm-banner").lower()
    check("sample ratio mismatch" in text, f"#srm-banner says {text!r}")
    counted_through(browser, f"/experiments/{EXPERIMENT}/results", position)
    browser.absent("#srm-banner", f"{EXPERIMENT}'s split matches its weights")
    browser.open("/experiments")
    badge = browser.all(f'tr[data-experiment="{SKEWED}"] td.health span.badge[data-health="srm"]')
    check(badge, f"the list shows no srm badge for {SKEWED}")
    browser.screenshot("list")
    # htmx: typing in the search box swaps in the matching rows without
    # leaving the page (a marker set on the window survives), and the
    # address follows the filter.
    browser.driver.execute_script("window.__same_page = true")
    browser.find('#filters input[name="q"]').send_keys("upsell")
    browser.wait(lambda driver: "q=upsell" in driver.current_url
                 and [row.get_attribute("data-experiment")
                      for row in driver.find_elements(By.CSS_SELECTOR, "#experiments tr[data-experiment]")]
                 == [SKEWED], "typing 'upsell' in the search box leaves only the upsell experiment, "
                 "and the address follows the search")
    check(browser.driver.execute_script("return window.__same_page === true"),
          "the search reloaded the whole page instead of swapping the table")
    return (f"{SKEWED} with exposed units {counts} shows #srm-banner (and an srm badge); {EXPERIMENT} does not; "
            "the list filters as one types")


def viewer(browser, api):
    before = api.get(EXPERIMENT, VIEWER[0])
    browser.sign_out()
    browser.sign_in(*VIEWER)
    browser.absent("#new-experiment", "a viewer cannot create")
    browser.open(f"/experiments/{EXPERIMENT}")
    for css in ("section#moves", "form.move", "#edit", "a.rollback"):
        browser.absent(css, "a viewer cannot change the experiment")
    browser.screenshot("viewer-experiment")
    csrf = browser.find('#sign-out-form input[name="csrf"]').get_attribute("value")
    check(csrf, "the sign-out form carries no csrf token")
    url = f"/experiments/{EXPERIMENT}/pause"
    fields = {"reason": "forged", "expected_revision": str(before.revision)}
    for label, body in (("without a CSRF token", fields), ("with the viewer's CSRF token", dict(fields, csrf=csrf))):
        answer = browser.driver.execute_async_script(FORGED_POST, url, body)
        check(answer["status"] == 403, f"a viewer's POST {label} to {url} answered {answer['status']}, not 403")
        if "csrf" in body:
            check("viewer" in answer["text"], "the refusal of the viewer's own POST does not say it is a viewer's")
    after = api.get(EXPERIMENT, VIEWER[0])
    check(after.revision == before.revision and after.status == before.status,
          f"the forged POSTs changed {EXPERIMENT}: revision {before.revision} -> {after.revision}, "
          f"status {before.status} -> {after.status}")
    for path in ("/experiments/new", f"/experiments/{EXPERIMENT}/edit"):
        browser.open(path)
        browser.absent("#experiment-form", f"a viewer is shown the form of {path}")
        check("only an editor" in browser.text("#error"), f"{path} does not tell a viewer why: {browser.text('main')[:200]}")
    browser.open(f"/experiments/{EXPERIMENT}/overrides")
    browser.absent("#override-form", "a viewer cannot add overrides")
    browser.absent("form.delete-override", "a viewer cannot delete overrides")
    return f"viewer: no moves, edit, rollback, new or override controls; forged pause POSTs 403, revision {after.revision} kept"


def stale_edit(browser, api):
    from google.protobuf import field_mask_pb2

    browser.sign_out()
    browser.sign_in(*EDITOR)
    browser.open(f"/experiments/{EXPERIMENT}/edit")
    based_on = int(browser.find('#experiment-form input[name="revision"]').get_attribute("value"))
    current = api.get(EXPERIMENT)
    check(based_on == current.revision, f"the edit form is based on revision {based_on}, gRPC says {current.revision}")

    theirs = "Model v3 with style re-ranking (description changed over gRPC)"
    update = api.pb.Experiment(id=EXPERIMENT, description=theirs, revision=based_on)
    written = api.admin.UpdateExperiment(
        api.admin_pb.UpdateExperimentRequest(
            experiment=update, update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            reason="out of band"),
        metadata=api.auth(EDITOR[0]), timeout=10).experiment
    check(written.revision == based_on + 1, f"the out-of-band update wrote revision {written.revision}")

    mine = "Re-ranking by style raises add-to-cart rate (edited in the browser)"
    browser.fill("hypothesis", mine)
    browser.fill("reason", "sharper hypothesis")
    browser.submit(browser.find("#save"))
    check(browser.all("#stale"), f"saving a stale edit shows no #stale: {browser.text('main')[:400]}")
    text = browser.text("#stale")
    check("nothing was saved" in text.lower(), f"#stale does not say nothing was saved: {text!r}")
    check(f"revision {based_on}" in text and f"revision {written.revision}" in text,
          f"#stale does not name revisions {based_on} and {written.revision}: {text!r}")
    changed = [li.get_attribute("data-field") for li in browser.all("#stale ul.diff li")]
    check("description" in changed, f"#stale lists {changed}, not description")
    kept = browser.find('#experiment-form [name="hypothesis"]').get_attribute("value")
    check(kept == mine, f"the stale page lost what was typed (hypothesis {kept!r})")
    browser.screenshot("stale-edit")
    after = api.get(EXPERIMENT)
    check(after.revision == written.revision, f"the stale edit wrote revision {after.revision}")
    check(after.description == theirs and after.hypothesis != mine, "the stale edit changed the experiment")
    return f"stale edit based on revision {based_on} (now {written.revision}): #stale lists {changed}, nothing written"


def unchanged_edit(browser, api):
    """An experiment made over gRPC with what the form has no catalogue
    entry for (its own metric definition, used as a guardrail) and a start
    time to the nanosecond, saved from the edit page as it is: nothing
    changes."""
    pb = api.pb
    custom = "clicks_per_session"
    experiment = pb.Experiment(
        id=ROUND_TRIP, name="Home pool: round trip", owner=EDITOR[1],
        hypothesis="A wider pool keeps clicks per session",
        variants=[pb.Variant(name="control", weight=50), pb.Variant(name="treatment", weight=50)],
        control_variant="control", traffic_percent=30,
        bucketing_unit=pb.BUCKETING_UNIT_USER_OR_SESSION,
        eligibility=pb.Eligibility(placements=["home_feed"], countries=["US", "DE"]),
        metrics=pb.MetricsConfig(
            primary_metric="add_to_cart_rate",
            guardrails=[pb.Guardrail(metric=custom, threshold=0.1, action=pb.GUARDRAIL_ACTION_PAUSE)],
            definitions=[pb.MetricDefinition(
                name=custom, description="clicks per session", kind=pb.METRIC_KIND_MEAN,
                numerator=pb.Measure(outcome_type=pb.OUTCOME_TYPE_CLICK, aggregate=pb.MEASURE_AGGREGATE_COUNT),
                higher_is_better=True)],
        ),
    )
    # An editor's own session without the form's CSRF token changes nothing.
    before = api.get(EXPERIMENT)
    answer = browser.driver.execute_async_script(
        FORGED_POST, f"/experiments/{EXPERIMENT}/pause",
        {"reason": "forged", "expected_revision": str(before.revision)})
    check(answer["status"] == 403, f"an editor's POST without a CSRF token answered {answer['status']}, not 403")
    check(api.get(EXPERIMENT).revision == before.revision, "a POST without a CSRF token changed the experiment")
    start = datetime.now(timezone.utc) + timedelta(days=3)
    experiment.schedule.start_time.seconds = int(start.timestamp())
    experiment.schedule.start_time.nanos = 123_456_789
    created = api.admin.CreateExperiment(
        api.admin_pb.CreateExperimentRequest(experiment=experiment, reason="made over gRPC"),
        metadata=api.auth(EDITOR[0]), timeout=10).experiment
    browser.open(f"/experiments/{ROUND_TRIP}/edit")
    browser.fill("reason", "saved unchanged")
    browser.submit(browser.find("#save"))
    browser.absent("#error", f"saving unchanged was refused: {browser.text('main')[:400]}")
    top = history_top(browser)
    check(top["revision"] == created.revision + 1, f"the save wrote revision {top['revision']}")
    check(top["fields"] == [], f"saving the edit page unchanged changed {top['fields']}")
    after = api.get(ROUND_TRIP)
    check([g.metric for g in after.metrics.guardrails] == [custom],
          f"the guardrail on the experiment's own metric was lost: {after.metrics.guardrails}")
    check(after.schedule.start_time.nanos == 123_456_789, "the start time lost its fraction of a second")
    return (f"an editor's POST without a CSRF token is refused; {ROUND_TRIP} saved from its edit page "
            f"unchanged: revision {top['revision']} changes no field")


def holdout_group(api, holdout_revision):
    """How an Assign answer on the second experiment's placement reads as
    a group of the holdout: `holdout` when Assign held the unit out (reason
    HOLDOUT naming it, and not the experiment), else `rest` (it got the
    experiment)."""
    def group(answer):
        held = [a for a in answer.assignments
                if a.reason == api.assign_pb.ASSIGNMENT_REASON_HOLDOUT and a.holdout_id == HOLDOUT]
        served = bucketed(answer, SKEWED)
        if held:
            check(served is None, f"a unit held out by {HOLDOUT} still got {SKEWED}: {answer}")
            return SimpleNamespace(variant="holdout", unit_type=held[0].unit_type, revision=held[0].revision)
        check(served is not None, f"a unit neither held out by {HOLDOUT} nor in {SKEWED}: {answer}")
        return SimpleNamespace(variant="rest", unit_type=answer.unit_type, revision=holdout_revision)
    return group


def holdout(browser, api):
    editor = api.auth(EDITOR[0])
    before = api.config_version()
    created = api.admin.CreateHoldout(
        api.admin_pb.CreateHoldoutRequest(holdout=api.pb.Holdout(
            id=HOLDOUT, description="Everything the cart experiments ship in 2027 H1",
            share_basis_points=HOLDOUT_SHARE, placements=[SKEWED_PLACEMENT])),
        metadata=editor, timeout=10).holdout
    check(created.revision == 1 and created.status == api.pb.HOLDOUT_STATUS_ACTIVE,
          f"CreateHoldout answered revision {created.revision}, status {created.status}")
    wait_until(lambda: api.assign("holdout-probe", SKEWED_PLACEMENT).config_version > before,
               f"Assign answers from a config version after {before}, the one with {HOLDOUT}")
    rng = random.Random(2027)
    now = datetime.now(timezone.utc)
    users = [f"holdout-user-{index}" for index in range(1500)]
    counts, outcomes = simulate(api, HOLDOUT, users, SKEWED_PLACEMENT, now - timedelta(hours=3),
                                now - timedelta(minutes=35), rng, group=holdout_group(api, created.revision))
    check(sum(counts.values()) == len(users) and counts.get("holdout", 0) > 0 and counts.get("rest", 0) > 0,
          f"{len(users)} users on {SKEWED_PLACEMENT} fell into groups {counts}: both groups should have units")
    position = api.position
    answer = api.get_results(HOLDOUT, position)
    exposed = {variant.variant: variant.exposed_units for variant in answer.variants}
    check(exposed == counts, f"GetResults({HOLDOUT}) has exposed units {exposed}, the exposures logged {counts}")

    # From the experiments list's navigation to the holdout's results.
    browser.open("/experiments")
    browser.submit(browser.find("header nav a#nav-holdouts"))
    check(browser.path() == "/holdouts", f"the navigation's Holdouts link lands on {browser.path()}")
    row = browser.find(f'#holdouts tr[data-holdout="{HOLDOUT}"]')
    shown = {cell: browser.find(f"td.{cell}", row).text.strip() for cell in ("status", "share", "placements")}
    wanted = {"status": "active", "share": "20%", "placements": SKEWED_PLACEMENT}
    check(shown == wanted, f"the holdouts list shows {shown}, not {wanted}")
    browser.screenshot("holdouts")
    browser.submit(browser.find("td.id a.results", row))
    path = f"/holdouts/{HOLDOUT}/results"
    check(browser.path() == path, f"the holdout's link lands on {browser.path()}, not {path}")
    counted_through(browser, path, position)
    check(browser.text("#share").startswith("20%"), f"#share says {browser.text('#share')!r}")
    control = browser.text("#correction strong")
    check(control == "holdout", f"the differences are against {control!r}, not the holdout group")
    rows, _ = metrics_equal_results(browser, api, answer)
    for group in ("holdout", "rest"):
        units = [cell.get_attribute("data-value")
                 for cell in browser.all(f'table#metrics tr[data-variant="{group}"] td.units')]
        check(units and set(units) == {str(counts[group])},
              f"the metrics table's {group} rows show units {units}, not the {counts[group]} exposed")
    browser.absent("#srm-banner", f"the exposed units {counts} match the {HOLDOUT_SHARE} basis points held out")
    timeline = json.loads(browser.driver.execute_script(
        "return document.getElementById('timeline-data').textContent"))
    lifted = [treatment["variant"] for treatment in timeline["treatments"]]
    check(lifted == ["rest"], f"the lift chart's data is of {lifted}, not rest against holdout")
    browser.screenshot("holdout-results")

    unknown = browser.driver.execute_async_script(FETCH, "/holdouts/no_such_holdout/results")
    check(unknown["status"] == 404 and "no_such_holdout" in unknown["text"],
          f"an unknown holdout's page answered {unknown['status']}: {unknown['text'][:300]}")

    # End it: the confirm dialog, then the page says so and Assign serves
    # the experiment to the held-out units again.
    group = holdout_group(api, created.revision)
    held_out = next(user for user in users if group(api.assign(user, SKEWED_PLACEMENT)).variant == "holdout")
    browser.driver.execute_script("window.__leaving = true")
    browser.find("#end-holdout").click()
    browser.wait(expected_conditions.alert_is_present(), "End holdout asks to confirm")
    browser.driver.switch_to.alert.accept()
    browser.wait(lambda driver: driver.execute_script(
        "return !window.__leaving && document.readyState === 'complete'"), "the ended holdout's page arrives")
    browser.absent("#error", f"ending the holdout was refused: {browser.text('main')[:300]}")
    check(browser.text("#status") == "ended", f"after End holdout, #status is {browser.text('#status')!r}")
    check("ended holdout" in browser.text("#notice"), f"the notice says {browser.text('#notice')!r}")
    browser.absent("#end-holdout", "an ended holdout cannot be ended again")
    ended = api.admin.GetHoldout(api.admin_pb.GetHoldoutRequest(id=HOLDOUT), metadata=editor, timeout=10).holdout
    check(ended.status == api.pb.HOLDOUT_STATUS_ENDED and ended.updated_by == EDITOR[1],
          f"GetHoldout says status {ended.status} by {ended.updated_by!r} after End holdout")
    wait_until(lambda: bucketed(api.assign(held_out, SKEWED_PLACEMENT), SKEWED),
               f"Assign serves {SKEWED} to {held_out} once {HOLDOUT} has ended")
    return (f"{HOLDOUT} holds out {counts['holdout']} of {len(users)} users ({counts}, {outcomes} outcomes): "
            f"/holdouts links to its results, {len(rows)} metric rows equal GetResults; unknown id 404; "
            f"ended from its page, {held_out} gets {SKEWED} again")


SCENARIOS = [
    ("create through the form", create_with_mistakes),
    ("status moves", lifecycle),
    ("rollback", rollback),
    ("QA override", overrides),
    ("results against GetResults", results),
    ("sample ratio mismatch banner", skewed_split),
    ("viewer", viewer),
    ("stale edit", stale_edit),
    ("an edit saved unchanged changes nothing", unchanged_edit),
    ("holdout against rest", holdout),
]


def main():
    binary = expd_binary()
    if binary is None:
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="expd-console-") as temp:
        work = Path(temp)
        (work / "stubs").mkdir()
        expd = Expd(binary, work, (EDITOR, VIEWER, DATA_PLANE))
        browser = None
        failed = False
        number, name = 0, "start-up"
        try:
            generate_stubs(work / "stubs")
            expd.start()
            api = Api(expd.grpc_addr)
            browser = Browser(expd.base)
            for number, (name, scenario) in enumerate(SCENARIOS, 1):
                at = time.monotonic()
                summary = scenario(browser, api)
                print(f"ok {number} - {name}: {summary} ({time.monotonic() - at:.1f} s)", flush=True)
        except Exception as error:  # noqa: BLE001 -- any failure ends the run, explained
            failed = True
            print(f"FAIL {number} - {name}: {error}", flush=True)
            if not isinstance(error, Failure):
                traceback.print_exc()
            if browser:
                try:
                    browser.driver.save_screenshot(str(SCREENSHOTS / "failure.png"))
                    print(f"# the browser was at {browser.driver.current_url}; "
                          f"screenshot target/console-screenshots/failure.png", file=sys.stderr)
                except Exception:  # noqa: BLE001 -- best effort
                    pass
        finally:
            if browser:
                browser.quit()
            expd.stop_after_run(failed)
    print(f"console: {'FAILED' if failed else 'all scenarios passed'} in {time.monotonic() - started:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
