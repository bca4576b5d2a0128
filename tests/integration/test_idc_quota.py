"""IDC's proxy over its daily quota answers 429 with an HTML page (issue 16): the bridge takes that as a state,
not a retry loop. The first C-FIND gets 0xA700 with an ErrorComment naming the quota and the alternatives, later
C-FIND, C-MOVE and C-GET on that upstream fail at once (0xA700 / 0xA702) without any request reaching the proxy,
it is logged once, and another upstream is not affected. A 429 with a JSON body (Google's rate limit) is still
retried."""
import os

import harness
from harness import Bridge, StoreSCP, TestCase, comment_of, findscu, run, status_of
from peers import HttpPeer

QUOTA_PAGE = (b"<!DOCTYPE html><html><head><title>Quota exceeded</title></head><body><p>The daily quota of the IDC "
              b"viewer proxy has been exceeded. Use the authenticated store or the public buckets.</p></body></html>")


class QuotaProxy(HttpPeer):
    def handle(self, h, method, body):
        self.reply(h, 429, QUOTA_PAGE, ctype="text/html; charset=utf-8")


class RateLimited(HttpPeer):
    """429 with Google's JSON error once, then an empty study list."""

    def handle(self, h, method, body):
        with self.lock:
            first = len(self.requests) == 1
        if first:
            self.reply(h, 429, {"error": {"code": 429, "message": "Quota exceeded for quota metric"}},
                       ctype="application/json", headers=[("Retry-After", "0")])
        else:
            self.reply(h, 200, [])


class IdcQuotaTest(TestCase):
    def test_html_429_stops_requests_until_midnight(self):
        proxy = QuotaProxy()
        self.addCleanup(proxy.close)
        other = RateLimited()
        self.addCleanup(other.close)
        pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "IDC", "base_url": proxy.url + "/dicomWeb", "max_retries": 5},
                          {"ae_title": "OTHER", "base_url": other.url, "max_retries": 2}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        keys = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName"]
        p, _ = findscu(bridge.port, "IDC", keys, extra=["-d"], workdir=self.workdir)
        self.assertEqual(status_of(p), "0xa700", p.stdout[-1500:])
        self.assertEqual(comment_of(p).strip(), "IDC proxy daily quota reached; use a bucket or via google")
        self.assertEqual(len(proxy.requests), 1, "a 429 with an HTML page is not retried")
        p, _ = findscu(bridge.port, "IDC", keys, extra=["-d"], workdir=self.workdir)
        self.assertEqual(status_of(p), "0xa700")
        self.assertIn("quota", comment_of(p))
        for cmd in (["movescu", "-d", "-S", "-aem", "PACS"], ["getscu", "-d", "-S"]):
            m = run(cmd + ["-aec", "IDC", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3",
                           "127.0.0.1", str(bridge.port)])
            self.assertEqual(status_of(m), "0xa702", m.stdout[-1500:])
            self.assertEqual(comment_of(m).strip(), "IDC proxy daily quota reached; use a bucket or via google")
        self.assertEqual(len(proxy.requests), 1, "no request reaches the proxy while its quota is exhausted")
        log = bridge.log()
        self.assertEqual(log.count("IDC proxy daily quota reached; no request goes to this upstream"), 1, log[-3000:])
        self.assertIn("public buckets", log)
        # Another upstream: a JSON 429 is a rate limit, retried, and the query succeeds.
        p, res = findscu(bridge.port, "OTHER", keys, extra=["-d"], workdir=self.workdir)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual(len(other.requests), 2, "the JSON 429 was retried once")


if __name__ == "__main__":
    harness.main()
