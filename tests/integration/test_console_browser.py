"""The operator's console (issue 29, gateway/console/API.md) in a real browser: Debian's headless chromium driven by
playwright-core (console_drive.js), as test_ohif does. A real bridge with its console on the ops HTTP port under a
prefix and an admin token, a real Orthanc behind faultstore.py, storescp as the C-MOVE destination (slowed by
--sleep-during so that a C-MOVE lasts a few seconds). What the page, polled every second, must show:
(a) during a store outage the upstream unavailable with the store's answer, and its queue growing as instances are
    C-STOREd;
(b) instances the store refuses for good (422) in the failed table with their reason, once the store is back;
(c) a running C-MOVE's progress (sent / left of the total), then the transfer done;
(d) without the token a Retry refused by the server (403 to the page's own POST and to a plain fetch from the page),
    not only a disabled button; with the token Retry sends the instance again and it reaches Orthanc, and Discard
    (after the confirmation dialog, which dismissed keeps it) deletes its file from <spool>/<AE>/failed/.
The page's screenshot with failed instances and a running transfer is kept in <build>/artefacts/console/ (and
written to docs/console.png, which the README shows, when DWB_UPDATE_DOCS=1). CTest label `browser`."""
import glob
import json
import os
import queue
import shutil
import subprocess
import threading
import time
import urllib.request

import harness
from faultstore import FaultStore
from harness import Bridge, Orthanc, StoreSCP, TestCase, run, wait_for

NPM_DIR = os.environ.get("DWB_NPM_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dicomweb-bridge", "npm")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console_drive.js")
PREFIX = "/dicomweb-bridge"  # the Kaapana chart's console path: the page must work under any prefix
TOKEN = "console-test-token-7f3a"
AE = "STORE"

# Read from the page's DOM by the test (the stable ids and data attributes console.js gives its elements).
HELPERS = r"""
window.T = {
  field(root, name) {
    const e = root.querySelector('[data-field="' + name + '"]');
    return e ? { text: e.textContent, value: e.dataset.value === undefined ? null : Number(e.dataset.value) } : null;
  },
  card(ae) {
    const c = document.querySelector('[data-upstream="' + ae + '"]');
    if (!c) return null;
    const f = (n) => T.field(c, n);
    return {
      state: c.dataset.state, classes: c.className, badge: f('state').text, detail: f('state-detail').text,
      queue: f('queue-instances').value, queueText: f('queue-instances').text, bytes: f('queue-bytes').value,
      bytesText: f('queue-bytes').text, oldest: f('oldest-age').value, oldestText: f('oldest-age').text,
      failed: f('failed').value, delivered: f('delivered-last-hour').value,
      failedRows: [...c.querySelectorAll('tr[data-failed-id]')].map((tr) => ({
        id: tr.dataset.failedId, reason: tr.querySelector('[data-field="reason"]').textContent,
        cells: [...tr.cells].map((td) => td.textContent),
        history: [...tr.querySelectorAll('li')].map((li) => li.textContent),
        retryDisabled: tr.querySelector('[data-action="retry"]').disabled,
        discardDisabled: tr.querySelector('[data-action="discard"]').disabled })),
    };
  },
  transfers() {
    return [...document.querySelectorAll('#transfers tbody tr')].map((tr) => ({
      id: tr.dataset.transferId, state: tr.dataset.state, cells: [...tr.cells].map((td) => td.textContent),
      progress: T.field(tr, 'progress').text, error: T.field(tr, 'error').text }));
  },
  message() {
    const m = document.getElementById('message');
    return m.hidden ? null : { kind: m.dataset.kind, text: m.textContent };
  },
  async post(action, body, headers) {
    const r = await fetch('api/failed/' + action, { method: 'POST', headers, body: JSON.stringify(body) });
    return { status: r.status, body: await r.json().catch(() => null) };
  },
};
true
"""


class Page:
    """The console in chromium, through console_drive.js: one command a line, one answer a line."""

    def __init__(self, tc, url, shots):
        self.tc = tc
        env = harness.peer_env()
        env["NODE_PATH"] = os.path.join(NPM_DIR, "node_modules")
        self.stderr = open(os.path.join(tc.workdir, "console_drive.log"), "w")
        self.proc = subprocess.Popen(
            ["node", DRIVER, json.dumps({"url": url, "chromium": CHROMIUM, "shots": shots, "width": 1400,
                                         "height": 600})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        self.lines = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()
        first = self._answer(60)
        if not first["ok"]:
            raise AssertionError("the browser did not open the console: %s" % first["error"])
        self.url = first["value"]

    def _reader(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _answer(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the browser driver gave no answer within %d s" % timeout)
        if line is None:
            self.stderr.flush()
            raise AssertionError("the browser driver exited (%s):\n%s" % (
                self.proc.poll(), harness.tail(self.stderr.name)))
        return json.loads(line)

    def call(self, op, timeout=60, **kw):
        self.proc.stdin.write(json.dumps(dict(op=op, **kw)) + "\n")
        self.proc.stdin.flush()
        r = self._answer(timeout)
        if not r["ok"]:
            raise AssertionError("browser: %s %s failed: %s\n--- the page said:\n%s\n--- screenshot: %s" % (
                op, kw.get("expr", kw.get("selector", "")), r["error"], r.get("text", "")[:3000],
                r.get("screenshot")))
        return r["value"]

    def eval(self, expr):
        return self.call("eval", expr=expr)

    def wait(self, expr, what, timeout=20):
        """Waits until the page expression is truthy; returns its value. Fails naming what was expected and what
        the page showed instead."""
        try:
            return self.call("wait", timeout=timeout + 15, expr=expr, timeout_ms=timeout * 1000)
        except AssertionError as e:
            raise AssertionError("the page did not show %s within %d s: %s" % (what, timeout, e)) from None

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("quit", timeout=15)
            except (AssertionError, OSError):
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.stderr.close()


class ConsoleBrowserTest(TestCase):
    def setUp(self):
        super().setUp()
        self.assertTrue(os.path.isfile(CHROMIUM), "chromium at %s" % CHROMIUM)
        self.assertTrue(os.path.isdir(os.path.join(NPM_DIR, "node_modules", "playwright-core")),
                        "playwright-core in %s (scripts/install-deps puts it there)" % NPM_DIR)
        self.orthanc = self.start(Orthanc(self.workdir))
        self.spool = os.path.join(self.workdir, "spool")
        # The store's behaviour, switched by the test: an outage (503 to every STOW-RS), then refusals for good
        # (422 and 400) of the poisoned and the malformed instance.
        self.outage = True
        self.poison = set()
        self.malformed = set()

        def policy(n, method, path, uids):
            if method != "POST":
                return None
            if self.outage:
                return ("answer", 503, [("Content-Type", "text/plain")], b"down for maintenance")
            # Two refusals for good, so that the page's rows can be told apart by their reasons.
            if uids and self.malformed.intersection(uids):
                return ("answer", 400, [("Content-Type", "text/plain")], b"malformed, says the test store")
            if uids and self.poison.intersection(uids):
                return ("answer", 422, [("Content-Type", "text/plain")], b"refused by the test store: poisoned")
            return None

        self.store = FaultStore(self.orthanc.http_port, policy=policy)
        self.addCleanup(self.store.close)

    def failed_files(self):
        return sorted(glob.glob(os.path.join(self.spool, AE, "failed", "*.dcm")))

    def api(self, path):
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return json.loads(r.read())

    def storescu(self, files):
        p = run(["storescu", "-aec", AE, "127.0.0.1", str(self.bridge.port)] + files, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])

    def test_console_in_a_browser(self):
        t_start = time.time()
        d, man = harness.gencohort(self.workdir, name="stored", patients=1, studies=1, series=1, instances=6,
                                   rows=64, cols=64)
        stored = sorted((i["SOPInstanceUID"], os.path.join(d, i["file"])) for i in man["instances"])
        d2, man2 = harness.gencohort(self.workdir, name="moved", patients=1, studies=1, series=1, instances=3,
                                     rows=64, cols=64, seed=7)
        moved_study = man2["instances"][0]["StudyInstanceUID"]
        self.orthanc.upload([os.path.join(d2, i["file"]) for i in man2["instances"]])
        n_moved = len(man2["instances"])
        # Each C-STORE into the destination takes seconds (storescp sleeps at more than one point of it): the
        # C-MOVE lasts long enough for the page to show it part-way.
        pacs = self.start(StoreSCP(self.workdir, aet="PACS", extra_args=["--sleep-during", "1"]))
        token_file = os.path.join(self.workdir, "admin-token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        self.bridge = self.start(Bridge(self.workdir, {
            "listen": {"ae_title": "DWBRIDGE"},
            "upstreams": [{"ae_title": AE, "base_url": self.store.url, "stow_batch_delay_ms": 50,
                           "retry_max_wait_s": 1, "max_attempts": 2}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
            "spool": {"dir": self.spool},
            "http": {"console_path": PREFIX, "admin_token_file": token_file},
            "log": {"level": "debug"}}))
        self.base = "http://127.0.0.1:%d%s/" % (self.bridge.http_port, PREFIX)
        # The page's files as the binary ships them: the bytes of gateway/console/ (rebuilt after an edit), each
        # with its type (the server sends nosniff: a script served as anything else is not run).
        for name, ctype in (("", "text/html"), ("console.css", "text/css"), ("console.js", "text/javascript")):
            with urllib.request.urlopen(self.base + name, timeout=10) as r:
                body, got = r.read(), r.headers.get("Content-Type", "")
            source = os.path.join(harness.SOURCE_DIR, "gateway", "console", name or "index.html")
            with open(source, "rb") as f:
                self.assertEqual(body, f.read(), "%s%s as served is %s" % (PREFIX, "/" + name, source))
            self.assertEqual(got.split(";")[0].strip(), ctype, "Content-Type of %s/%s" % (PREFIX, name))
        shots = os.path.join(harness.BUILD_DIR or self.workdir, "artefacts", "console")
        os.makedirs(shots, exist_ok=True)
        # <path> without the slash redirects to <path>/, where the page is.
        page = Page(self, self.base[:-1], shots)
        self.addCleanup(page.close)
        self.assertEqual(page.url, self.base, "the console's path redirects to itself with a slash")
        page.eval(HELPERS)
        card = "T.card(%s)" % json.dumps(AE)

        first = page.wait("(() => { const c = %s; return c && c.state === 'healthy' && c.queue === 0 && c; })()" % card,
                          "the upstream healthy with an empty queue")
        self.assertEqual(first["badge"], "healthy")
        self.assertEqual(page.eval("document.getElementById('transfers-empty').hidden"), False,
                         "no transfers yet: the page says so")
        self.assertIn("read-only", page.eval("document.getElementById('access').textContent"))

        # ---- (a) a store outage: unavailable, and the queue grows with every C-STORE ----
        (poisoned, _), (malformed, _) = stored[1], stored[4]  # refused for good once the store is back
        self.storescu([f for _, f in stored[:3]])
        a1 = page.wait("(() => { const c = %s; return c && c.state === 'unavailable' && c.queue === 3 && c; })()" % card,
                       "the upstream unavailable with 3 instances queued")
        self.assertIn("state-unavailable", a1["classes"].split())
        self.assertEqual(a1["badge"], "unavailable")
        self.assertIn("HTTP 503", a1["detail"], "the store's answer is the reason shown")
        self.assertRegex(a1["queueText"], r"^3 instances")
        self.assertGreater(a1["bytes"], 0)
        self.assertRegex(a1["bytesText"], r"^\d+(\.\d)? (KiB|MiB)$")
        self.storescu([f for _, f in stored[3:]])
        a2 = page.wait("(() => { const c = %s; return c && c.queue === 6 && c; })()" % card,
                       "the queue grown to 6 instances")
        self.assertEqual(a2["state"], "unavailable")
        self.assertGreater(a2["bytes"], a1["bytes"], "queued bytes grow with the queue")
        api = self.api("api/state")["upstreams"][0]
        self.assertEqual((api["state"], api["queue"]["instances"]), ("unavailable", 6))
        self.assertIn("since %s UTC" % api["since"][11:19], a2["detail"], "when the outage began")
        if api["retry_at"]:
            self.assertRegex(a2["detail"], r"next attempt \d\d:\d\d:\d\d UTC")
        self.assertEqual(a2["bytes"], api["queue"]["bytes"], "the page shows the API's byte count")
        self.assertGreater(a2["oldest"], 0)
        self.assertRegex(a2["oldestText"], r"^(<1|\d+) s$")
        self.assertEqual(len(glob.glob(os.path.join(self.spool, AE, "*.dcm"))), 6, "all six kept in the spool")

        # ---- (b) the store is back but refuses two instances for good ----
        self.poison, self.malformed = {poisoned}, {malformed}
        self.outage = False
        b = page.wait("(() => { const c = %s; return c && c.state === 'healthy' && c.queue === 0 && c.failed === 2 &&"
                      " c.failedRows.length === 2 && c; })()" % card,
                      "the upstream healthy again, its queue empty and two failed instances listed", timeout=30)
        self.assertEqual(b["delivered"], 4, "four delivered in the last hour")
        by_reason = {}
        for row in b["failedRows"]:
            self.assertRegex(row["id"], r"^[0-9a-f]{16}$")
            for uid in (poisoned, malformed):
                self.assertNotIn(uid, "".join(row["cells"]), "no UID on the page without log.phi")
            self.assertTrue(row["retryDisabled"] and row["discardDisabled"], "read-only without the token: %s" % row)
            by_reason["HTTP 422" if "HTTP 422" in row["reason"] else "HTTP 400" if "HTTP 400" in row["reason"]
                      else row["reason"]] = row
        self.assertEqual(sorted(by_reason), ["HTTP 400", "HTTP 422"], "each row shows the store's own refusal")
        self.assertIn("refused by the test store: poisoned", by_reason["HTTP 422"]["reason"])
        self.assertIn("malformed, says the test store", by_reason["HTTP 400"]["reason"])
        self.assertEqual(by_reason["HTTP 422"]["reason"].count("***"), 1, "the UID in the reason is masked: %s"
                         % by_reason["HTTP 422"]["reason"])
        sizes = sorted(int(page.eval("document.querySelector('[data-failed-id=\"%s\"] [data-field=\"size\"]')"
                                     ".dataset.value" % r["id"])) for r in b["failedRows"])
        self.assertEqual(sizes, sorted(os.path.getsize(f) for f in self.failed_files()),
                         "the sizes shown are those of the files in failed/")
        listed = self.api("api/failed?upstream=" + AE)
        self.assertEqual(sorted(i["id"] for i in listed["items"]), sorted(r["id"] for r in b["failedRows"]))
        self.assertEqual(sorted(self.orthanc.instance_uids()),
                         sorted([u for u, _ in stored if u not in (poisoned, malformed)] +
                                [i["SOPInstanceUID"] for i in man2["instances"]]))

        # ---- (d) without the token the server refuses, whatever the page does ----
        target = by_reason["HTTP 422"]["id"]  # retried once the store takes it
        other = by_reason["HTTP 400"]["id"]   # discarded
        for action in ("retry", "discard"):
            for headers in ({"Content-Type": "application/json"},
                            {"Content-Type": "application/json", "Authorization": "Bearer wrong-" + TOKEN}):
                r = page.eval("T.post(%s, {upstream: %s, id: %s}, %s)" % (
                    json.dumps(action), json.dumps(AE), json.dumps(target), json.dumps(headers)))
                self.assertEqual(r["status"], 403, "%s with %s: %s" % (action, headers, r))
                self.assertIn("not allowed", r["body"]["error"])
        refusal = r["body"]["error"]
        # The button is disabled; enabled by hand (as anyone can in the browser's tools), its POST is refused.
        page.eval("(() => { const b = document.querySelector('[data-failed-id=\"%s\"] [data-action=\"retry\"]');"
                  " b.disabled = false; b.click(); return true; })()" % target)
        msg = page.wait("(() => { const m = T.message(); return m && m.kind === 'error' && m; })()",
                        "the server's refusal of the Retry")
        self.assertIn("HTTP 403", msg["text"])
        self.assertIn(refusal, msg["text"], "the page shows the server's own message")
        posts = page.call("log")["posts"]
        self.assertEqual([p["status"] for p in posts if p["url"].endswith("/api/failed/retry")], [403, 403, 403])
        self.assertEqual(len(self.failed_files()), 2, "nothing retried or discarded without the token")

        # ---- with the token ----
        page.call("fill", selector="#token", value="wrong-" + TOKEN)
        page.call("click", selector="#token-use")
        page.wait("document.getElementById('access').textContent.includes('refused this token')",
                  "a wrong token named as refused")
        page.call("fill", selector="#token", value=TOKEN)
        page.call("click", selector="#token-use")
        page.wait("document.getElementById('access').dataset.writable === 'true' && "
                  "[...document.querySelectorAll('button[data-action]')].every((b) => !b.disabled)",
                  "the buttons enabled with the token")

        # ---- (c) a C-MOVE in progress, slowed by the destination ----
        move_log = open(os.path.join(self.workdir, "movescu.log"), "w")
        self.addCleanup(move_log.close)
        mover = subprocess.Popen(["movescu", "-S", "-aec", AE, "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                                  "-k", "StudyInstanceUID=" + moved_study, "127.0.0.1", str(self.bridge.port)],
                                 stdout=move_log, stderr=subprocess.STDOUT, env=harness.peer_env())
        self.addCleanup(lambda: mover.poll() is None and mover.kill())
        running = page.wait(
            "(() => T.transfers().find((t) => t.state === 'running' && /^[1-9]\\d* sent · 0 failed · [1-9]\\d* left of %d$/"
            ".test(t.progress)))()" % n_moved, "a running C-MOVE part-way through", timeout=20)
        self.assertEqual(running["cells"][1], "C-MOVE")
        self.assertIn("MOVESCU", running["cells"][3], "the caller is movescu's AE title: %s" % running["cells"])
        self.assertEqual(running["cells"][4:6], [AE, "PACS"])
        screenshot = os.path.join(shots, "console.png")
        page.call("screenshot", path=screenshot, fullPage=True)
        if os.environ.get("DWB_UPDATE_DOCS") == "1":
            shutil.copy(screenshot, os.path.join(harness.SOURCE_DIR, "docs", "console.png"))
        done = page.wait("(() => T.transfers().find((t) => t.id === %s && t.state === 'done'))()"
                         % json.dumps(running["id"]), "the C-MOVE done", timeout=30)
        self.assertEqual(done["progress"], "%d sent · 0 failed · 0 left of %d" % (n_moved, n_moved))
        api = [t for t in self.api("api/state")["transfers"] if str(t["id"]) == done["id"]][0]
        self.assertGreater(api["mb_per_s"], 0)
        self.assertRegex(done["cells"][7], r"^\d+(\.\d)? (B|KiB|MiB)/s$", "the transfer's speed, in human units")
        self.assertNotEqual(done["cells"][7], "0 B/s")
        self.assertEqual(mover.wait(30), 0, harness.tail(move_log.name))
        self.assertEqual(len(pacs.files()), n_moved, "the destination received the study")

        # ---- Retry sends it again, Discard deletes it ----
        self.poison = set()  # the store takes it now; the malformed one would still be refused
        page.call("click", selector='[data-failed-id="%s"] [data-action="retry"]' % target)
        msg = page.wait("(() => { const m = T.message(); return m && m.kind === 'ok' && m; })()", "the Retry accepted")
        self.assertIn(target, msg["text"])
        self.assertIn("queued again", msg["text"])
        post = [p for p in page.call("log")["posts"] if p["url"].endswith("/api/failed/retry")][-1]
        self.assertEqual((post["status"], post["headers"].get("authorization"), post["headers"].get("content-type")),
                         (200, "Bearer " + TOKEN, "application/json"))
        after = page.wait("(() => { const c = %s; return c && c.failed === 1 && c.failedRows.length === 1 && "
                          "c.delivered === 5 && c; })()" % card, "one failed instance left and the retried one delivered")
        self.assertEqual(after["failedRows"][0]["id"], other)
        self.assertTrue(wait_for(lambda: poisoned in self.orthanc.instance_uids(), 10),
                        "the retried instance reached Orthanc")
        self.assertNotIn(malformed, self.orthanc.instance_uids())
        self.assertEqual(len(self.failed_files()), 1)
        self.assertIn(malformed, os.path.basename(self.failed_files()[0]), "the other one stays in failed/")

        seen = page.call("click", selector='[data-failed-id="%s"] [data-action="discard"]' % other, dialog="dismiss")
        self.assertIsNotNone(seen, "Discard asks for confirmation")
        self.assertIn(other, seen)
        time.sleep(1.5)
        self.assertEqual(len(self.failed_files()), 1, "Discard not confirmed: the file stays")
        self.assertEqual(len(page.eval("%s.failedRows" % card)), 1)
        page.call("click", selector='[data-failed-id="%s"] [data-action="discard"]' % other, dialog="accept")
        msg = page.wait("(() => { const m = T.message(); return m && m.kind === 'ok' && m.text.includes('%s') && m; })()"
                        % other, "the Discard accepted")
        self.assertIn("discarded", msg["text"])
        page.wait("(() => { const c = %s; return c && c.failed === 0 && c.failedRows.length === 0 && c; })()" % card,
                  "no failed instance left")
        self.assertEqual(os.listdir(os.path.join(self.spool, AE, "failed")), [],
                         "the file and its reason are gone from failed/")
        time.sleep(1.5)
        self.assertNotIn(malformed, self.orthanc.instance_uids(), "a discarded instance is not sent")

        log = self.bridge.log()
        self.assertIn("console: retry of failed instance %s asked by the token holder from 127.0.0.1" % target, log)
        self.assertIn("console: discard of failed instance %s asked by the token holder from 127.0.0.1" % other, log)
        drv = page.call("log")
        self.assertEqual(drv["errors"], [], "no script error in the page")
        urls = [u.split(" ", 1)[1] for u in drv["requests"]]
        self.assertEqual(urls[0], self.base[:-1], "the test opened the console's path without its slash")
        outside = [u for u in urls[1:] if not u.startswith((self.base, "data:"))]
        self.assertEqual(outside, [], "every request of the page stays under %s" % self.base)
        print("console test: %.1f s; screenshot %s" % (time.time() - t_start, screenshot))


if __name__ == "__main__":
    harness.main()
