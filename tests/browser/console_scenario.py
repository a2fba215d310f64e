#!/usr/bin/env python3
"""The console in a real browser: headless Chromium driven over WebDriver
(chromedriver), against `reprise dev` with authentication on.

The scenario: a pipeline whose "deploy" stage runs two workflows in
parallel fails on one of them ("db"); the console shows it in Deployments;
opening it shows which workflow failed and its output; the Resume dialog
shows the stages that cannot be chosen with their reasons and the plan;
resuming from the failed stage opens the new execution, which succeeds
while the page watches; the history shows both attempts and the timeline;
an approval is given from the page; a user who may only read sees Resume
disabled with the reason.

Only the standard library: the WebDriver protocol is plain JSON over HTTP,
and the API is called the way the console calls it (Connect JSON).
A screenshot of each page goes to target/console-screenshots/.

    python3 tests/browser/console_scenario.py --binary target/debug/reprise
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SECRET = "console-scenario-secret-console-scenario!"
SHOTS = os.path.join("target", "console-screenshots")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token(subject):
    """An HS256 JWT for `subject`, valid for an hour."""
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": subject, "exp": int(time.time()) + 3600}).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


def http_json(method, url, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        raise RuntimeError(f"{method} {url} -> HTTP {e.code}: {text}") from None
    return json.loads(text) if text else {}


class Api:
    """The Connect JSON API, as one caller."""

    def __init__(self, base, subject):
        self.base, self.token = base, token(subject)

    def __call__(self, method, body):
        return http_json("POST", f"{self.base}/reprise.v1.{method}", body,
                         {"Authorization": f"Bearer {self.token}"})

    def wait_status(self, execution_id, wanted, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            e = self("ExecutionService/GetExecution", {"executionId": execution_id})["execution"]
            if e["status"] == wanted:
                return e
            time.sleep(0.2)
        raise AssertionError(f"{execution_id} did not become {wanted}: {e['status']}")


class Browser:
    """Just enough WebDriver: a session, navigation, scripts, clicks, screenshots."""

    def __init__(self, driver_url, chromium):
        self.url = driver_url
        options = {"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--window-size=1360,1000"]}
        if chromium:
            options["binary"] = chromium
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method, path, body=None):
        if method == "POST" and body is None:
            body = {}
        return http_json(method, self.url + path, body if method == "POST" else None)["value"]

    def do(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def go(self, url):
        self.do("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.do("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, what, script, *args, seconds=30):
        """Waits until `script` returns something truthy; returns it."""
        deadline, last = time.time() + seconds, None
        while time.time() < deadline:
            last = self.js(script, *args)
            if last:
                return last
            time.sleep(0.1)
        self.shot("failure")
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")

    def click(self, selector):
        self.wait(f"{selector} to be clickable",
                  "const e = document.querySelector(arguments[0]); return !!e && !e.disabled;", selector)
        # Live pages redraw: an element found just before a redraw is gone
        # by the click ("stale element"); find it again.
        for attempt in range(5):
            try:
                element = self.do("POST", "/element", {"using": "css selector", "value": selector})
                self.do("POST", f"/element/{next(iter(element.values()))}/click", {})
                return
            except RuntimeError as e:
                if "stale element" not in str(e) or attempt == 4:
                    raise
                time.sleep(0.1)

    def type(self, selector, text):
        element = self.do("POST", "/element", {"using": "css selector", "value": selector})
        self.do("POST", f"/element/{next(iter(element.values()))}/value", {"text": text})

    def text(self, selector):
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", selector)

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        path = os.path.join(SHOTS, f"{name}.png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.do("GET", "/screenshot")))
        print(f"  screenshot {path}")

    def close(self):
        try:
            self._call("DELETE", f"/session/{self.session}")
        except Exception:
            pass


def start(command, log, env=None):
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_http(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.2)
    raise AssertionError(f"nothing answered at {url}")


def step(text):
    print(f"- {text}", flush=True)


def scenario(base, browser, admin, work):
    # Set-up through the API: a reader, and a pipeline whose "db" workflow
    # fails the first time for each build (a marker file per artifact version).
    group = admin("AccessService/CreateUserGroup", {"name": "readers"})["group"]["id"]
    admin("AccessService/AddGroupMember", {"groupId": group, "subject": "viewer"})
    admin("AccessService/AddGrant", {"grant": {"groupId": group, "permission": "PERMISSION_VIEW", "application": "shop"}})
    marker = os.path.join(work, "migrated-")
    db = (f'if [ -f {marker}$REPRISE_ARTIFACT_WEB ]; then echo "schema up to date"; '
          f'else touch {marker}$REPRISE_ARTIFACT_WEB; echo "applying migration 42"; '
          f'echo "ERROR: migration 42 failed: lock timeout"; exit 3; fi')
    stage = lambda name, env, workflows: {
        "name": name, "environment": {"name": env, "type": "ENVIRONMENT_TYPE_NON_PROD"},
        "workflows": {"workflows": [{"name": n, "command": c} for n, c in workflows]}}
    pipeline = admin("PipelineService/CreatePipeline", {"application": "shop", "name": "deploy", "definition": {"stages": [
        stage("build", "ci", [("compile", "echo compiled web $REPRISE_ARTIFACT_WEB")]),
        stage("deploy", "staging", [("web", "echo rolled out web"), ("db", db)]),
        stage("verify", "staging", [("smoke", "sleep 2; echo smoke tests passed")]),
    ]}})["pipeline"]["id"]
    first = admin("ExecutionService/StartExecution", {"pipelineId": pipeline, "artifacts": {"web": "1.4.0"}})["execution"]["id"]
    admin.wait_status(first, "EXECUTION_STATUS_FAILED")

    step("Deployments asks for a token, then lists the failed execution")
    browser.go(base + "/")
    browser.wait("the token form", "return !document.querySelector('#token-form').hidden;")
    browser.type("#token-input", admin.token)
    browser.click("#token-save")
    row = f'#deployments tr[data-execution-id="{first}"]'
    browser.wait("the failed execution in Deployments",
                 "const r = document.querySelector(arguments[0]); return r && r.dataset.status === 'FAILED';", row)
    browser.shot("1-deployments-failed")

    step("the execution shows the failed workflow and its output")
    browser.click(row + " a.execution-link")
    db_row = '.stage[data-stage="deploy"] tr[data-workflow="db"]'
    browser.wait("the failed db workflow", "const r = document.querySelector(arguments[0]); return r && r.dataset.status === 'FAILED';", db_row)
    assert browser.text('.stage[data-stage="deploy"]').count("FAILED") >= 1
    assert "migration 42 failed" in browser.text(db_row + " pre.output"), browser.text(db_row)
    assert browser.text(db_row + " .exit-code") == "3", browser.text(db_row + " .exit-code")
    web_row = '.stage[data-stage="deploy"] tr[data-workflow="web"]'
    assert browser.js("return document.querySelector(arguments[0]).dataset.status", web_row) == "SUCCEEDED"
    assert "deploy" in browser.text("#why"), browser.text("#why")
    browser.shot("2-execution-failed")

    step("Resume: stages not reached are disabled with the reason; the plan")
    browser.click('button[data-action="resume"]')
    browser.wait("the dialog", "return document.querySelector('#resume-dialog').open;")
    verify = '#resume-stages label[data-stage="verify"]'
    assert browser.js("return document.querySelector(arguments[0] + ' input').disabled", verify)
    assert "never reached" in browser.text(verify).lower() or "not reached" in browser.text(verify).lower(), browser.text(verify)
    assert not browser.js("return document.querySelector(arguments[0] + ' input').disabled", '#resume-stages label[data-stage="deploy"]')
    browser.click('#resume-stages label[data-stage="deploy"] input')
    browser.wait("the plan", "return document.querySelectorAll('#plan tr').length === 3;")
    plan = browser.js("return [...document.querySelectorAll('#plan tr')].map(r => r.className + ' ' + r.textContent);")
    assert "plan-carry_over" in plan[0] and "CARRY OVER" in plan[0], plan
    assert "plan-run" in plan[1] and "web, db" in plan[1], plan
    assert "plan-run" in plan[2], plan
    browser.type("#resume-reason", "lock timeout was transient")
    browser.shot("3-resume-dialog")

    step("resume from the failed stage: the new execution opens and succeeds live")
    browser.click("#resume-confirm")
    browser.wait("the new execution's page",
                 "return location.hash.startsWith('#/executions/') && !location.hash.endsWith(arguments[0]) "
                 "&& document.querySelector('.execution') && !document.querySelector('#resume-dialog').open;", first)
    second = browser.js("return location.hash.split('/')[2];")
    seen_first = browser.js("return document.querySelector('.execution').dataset.status;")
    assert seen_first != "EXECUTION_STATUS_SUCCEEDED" and seen_first != "SUCCEEDED", \
        f"the page should open before the resume ends (verify sleeps 2 s), saw {seen_first}"
    browser.wait("the resume to succeed on the open page",
                 "const e = document.querySelector('.execution'); return e && e.dataset.status === 'SUCCEEDED';", seconds=60)
    assert browser.js("return location.hash.split('/')[2];") == second, "no navigation: the page updated live"
    assert "carried over from attempt 1" in browser.text('.stage[data-stage="build"]'), browser.text('.stage[data-stage="build"]')
    assert "schema up to date" in browser.text('.stage[data-stage="deploy"] tr[data-workflow="db"] pre.output')
    browser.shot("4-execution-resumed-succeeded")

    step("history: both attempts and the timeline")
    browser.click("#history-open")
    browser.wait("two attempts", "return document.querySelectorAll('#history tbody tr').length === 2;")
    attempts = browser.js("return [...document.querySelectorAll('#history tbody tr')].map(r => [r.dataset.attempt, r.dataset.status, r.textContent]);")
    assert [a[:2] for a in attempts] == [["2", "SUCCEEDED"], ["1", "FAILED"]], attempts
    assert "stage deploy" in attempts[0][2] and "lock timeout was transient" in attempts[0][2], attempts
    cells = browser.js("return [...document.querySelectorAll('#timeline tbody tr')].map(r => [...r.querySelectorAll('td')].map(c => c.dataset.kind));")
    assert cells == [["ran", "ran", "idle"], ["carried", "ran", "ran"]], cells
    browser.shot("5-history-timeline")

    step("Deployments shows only the latest attempt of the chain, with its counter")
    browser.go(base + "/#/")
    latest = f'#deployments tr[data-execution-id="{second}"]'
    browser.wait("the resumed chain", "return !!document.querySelector(arguments[0]);", latest)
    assert not browser.js("return !!document.querySelector(arguments[0]);", row), "the first attempt is not listed"
    assert "attempt 2" in browser.text(latest + " .attempt"), browser.text(latest)
    assert browser.js("return !!document.querySelector(arguments[0] + ' a.history');", latest)

    step("an approval: Approve is offered while the gate waits, and approving runs the rest")
    gated = admin("PipelineService/CreatePipeline", {"application": "shop", "name": "gated", "definition": {"stages": [
        {"name": "gate", "environment": {"name": "prod", "type": "ENVIRONMENT_TYPE_NON_PROD"}, "approval": {"timeout": "600s"}},
        stage("release", "prod", [("announce", "echo released")]),
    ]}})["pipeline"]["id"]
    waiting = admin("ExecutionService/StartExecution", {"pipelineId": gated})["execution"]["id"]
    browser.go(f"{base}/#/executions/{waiting}")
    browser.wait("the waiting gate", "const s = document.querySelector('.stage[data-stage=\"gate\"]'); return s && s.dataset.status === 'WAITING_APPROVAL';")
    assert browser.js("return document.querySelector('button[data-action=\"continue\"]').disabled;")
    browser.click('button[data-action="approve"]')
    browser.do("POST", "/alert/text", {"text": "looks good"})
    browser.do("POST", "/alert/accept", {})
    browser.wait("the approved execution to succeed",
                 "const e = document.querySelector('.execution'); return e && e.dataset.status === 'SUCCEEDED';", seconds=60)
    assert "looks good" in browser.text('.stage[data-stage="gate"]'), browser.text('.stage[data-stage="gate"]')
    browser.shot("6-approved")

    step("a reader sees Resume disabled, with the reason")
    other = admin("ExecutionService/StartExecution", {"pipelineId": pipeline, "artifacts": {"web": "1.5.0"}})["execution"]["id"]
    admin.wait_status(other, "EXECUTION_STATUS_FAILED")
    browser.click("#token-button")
    browser.click("#token-clear")
    browser.wait("the token form", "return !document.querySelector('#token-form').hidden;")
    browser.type("#token-input", token("viewer"))
    browser.click("#token-save")
    browser.go(f"{base}/#/executions/{other}")
    browser.wait("the failed execution", "const e = document.querySelector('.execution'); return e && e.dataset.status === 'FAILED';")
    assert browser.js("return document.querySelector('button[data-action=\"resume\"]').disabled;")
    why = browser.text("#resume-why")
    assert why and "permission denied" in why.lower() and "EXECUTE_PIPELINE" in why, why
    assert "EXECUTE_PIPELINE" in browser.js("return document.querySelector('button[data-action=\"resume\"]').title;")
    browser.shot("7-reader-resume-disabled")
    browser.go(base + "/#/")
    browser.wait("the reader's Deployments", "return document.querySelectorAll('#deployments tbody tr[data-execution-id]').length === 3;")
    browser.shot("8-deployments-reader")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/debug/reprise")
    parser.add_argument("--chromedriver", default=shutil.which("chromedriver") or "chromedriver")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="reprise-console-")
    port, driver_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, REPRISE_AUTH_HS256_SECRET=SECRET, REPRISE_TOKEN=token("admin"), NO_COLOR="1")
    server_log = open(os.path.join(work, "server.log"), "w")
    driver_log = open(os.path.join(work, "chromedriver.log"), "w")
    server = start([args.binary, "dev", "--listen", f"127.0.0.1:{port}", "--database-url",
                    f"sqlite://{work}/reprise.db", "--bootstrap-admin", "admin"], server_log, env)
    driver = start([args.chromedriver, f"--port={driver_port}"], driver_log)
    browser = None
    try:
        wait_http(base + "/")
        wait_http(f"http://127.0.0.1:{driver_port}/status")
        browser = Browser(f"http://127.0.0.1:{driver_port}", args.chromium)
        scenario(base, browser, Api(base, "admin"), work)
        print("console scenario: passed")
        return 0
    except Exception as e:
        print(f"console scenario: FAILED: {e}", file=sys.stderr)
        server_log.flush()
        with open(os.path.join(work, "server.log")) as f:
            print("server log (end):\n" + "".join(f.readlines()[-30:]), file=sys.stderr)
        raise
    finally:
        if browser:
            browser.close()
        for process in (driver, server):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
