"""The OHIF viewer served by the bridge itself (config `gateway.viewer`) on the gateway's listener, from a dist/
folder built here the way OHIF's npm package lays it out, in front of Orthanc: index.html, bundles and CSS come
back moved under the prefix with their exact length (a 40 MB bundle and a 64 MB wasm streamed, not held in
memory), each type with its Content-Type and Cache-Control, HEAD like GET without a body, 304 for a known ETag;
app-config.js is generated (evaluated by node); an address of the app that names no file gets index.html; the
gateway under the prefix answers like /dicom-web/ and writes the prefix into Retrieve URLs and BulkDataURIs.
Hostile requests never reach a file outside the folder: `..`, `%2e%2e`, `%00`, `\\`, `//`, hidden names and
symbolic links (out of the folder or not) are refused, writes answer 405, each refusal with one log line. The
gateway's token and per-address connection limit hold under the prefix; check-config and serve refuse a bad
prefix, a folder without index.html and an unknown upstream; without `viewer` nothing changes."""
import json
import os
import socket
import time

import harness
from harness import Bridge, Orthanc, TestCase, raw_request, run

AE = "ORTHANC"
P = "/ohif-dicomweb-bridge"
SECRET = b"TOP SECRET: outside viewer.dir"
BUNDLE = "app.bundle.0f6159c501addfe9.js"
WASM = "0ddf166f7a343eda.wasm"
INDEX = ('<!doctype html><html lang="en"><head><meta charset="UTF-8">'
         '<meta name="msapplication-TileImage" content="/assets/mstile-144x144.png">'
         '<script>console.time("scriptToView"),window.PUBLIC_URL="/"</script>'
         '<link rel="manifest" href="/manifest.json"><link rel="icon shortcut" href="/assets/favicon.ico">'
         '<script rel="preload" as="script" src="/app-config.js"></script>'
         '<script>function browserImportFunction(n){return import(n)}window.PUBLIC_URL="/"</script>'
         '<script defer src="/%s"></script><link href="/app.bundle.css" rel="stylesheet">'
         '<a href="//cdn.example/x.js"></a></head><body><div id="root"></div></body></html>' % BUNDLE)
PUBLIC_PATH = b'__webpack_require__.p = "/";'
MANIFEST = b'{"name": "OHIF Viewer", "icons": [{"src": "/assets/x.png", "sizes": "36x36"}], "start_url": "./index.html"}'
CSS = b"@font-face{font-family:Inter;src:url(/a34f9d1faa5f3315.woff2) format(\"woff2\")}.x{background:url(//cdn/y)}"
TYPES = {
    BUNDLE: "text/javascript; charset=utf-8", "app.bundle.css": "text/css; charset=utf-8",
    WASM: "application/wasm", "silent-refresh.html": "text/html; charset=utf-8",
    "manifest.json": "application/json", "assets/x.png": "image/png", "ohif-logo.svg": "image/svg+xml",
    "assets/favicon.ico": "image/x-icon", "a.woff": "font/woff", "a34f9d1faa5f3315.woff2": "font/woff2",
    "dicom-microscopy-viewer/dataLoader.worker.min.js.map": "application/json", "robots.txt": "text/plain; charset=utf-8",
    "assets/browserconfig.xml": "application/xml", "site.webmanifest": "application/manifest+json",
}


def moved(data):
    """What the bridge should send for a file of the dist: root-relative URLs moved under the prefix."""
    for old, new in ((b'="/a', b'="' + P.encode() + b"/a"), (b'="/m', b'="' + P.encode() + b"/m"),
                     (b'window.PUBLIC_URL="/"', b'window.PUBLIC_URL="' + P.encode() + b'/"'),
                     (PUBLIC_PATH, b'__webpack_require__.p = "' + P.encode() + b'/";'),
                     (b"url(/a", b"url(" + P.encode() + b"/a")):
        data = data.replace(old, new)
    return data


def make_dist(workdir):
    """A dist/ as OHIF's npm package has it (shortened), big files included, and traps around it."""
    dist = os.path.join(workdir, "dist")
    for d in ("assets", "dicom-microscopy-viewer", "empty-dir"):
        os.makedirs(os.path.join(dist, d))
    files = {"index.html": INDEX.encode(), "app.bundle.css": CSS, "app-config.js": b"window.config = {stale: 1};",
             "manifest.json": MANIFEST}
    for name in TYPES:
        files.setdefault(name, ("contents of %s\n" % name).encode())
    files[".hidden"] = SECRET
    for name, data in files.items():
        with open(os.path.join(dist, name), "wb") as f:
            f.write(data)
    # The main bundle: 40 MB with the webpack public path where blocks of 64 KiB meet, and near the end.
    with open(os.path.join(dist, BUNDLE), "wb") as f:
        f.write(b"a" * (65536 - 10) + PUBLIC_PATH + b"b" * (40 << 20) + PUBLIC_PATH + b"\nvar end = 1;\n")
    with open(os.path.join(dist, WASM), "wb") as f:
        f.write(b"\0asm" + os.urandom(1 << 20) * 64)
    # Outside the folder, and symbolic links to it (and one to a file inside): none is ever followed.
    os.makedirs(os.path.join(workdir, "secretdir"))
    for p in (os.path.join(workdir, "secret.txt"), os.path.join(workdir, "secretdir", "secret.txt")):
        with open(p, "wb") as f:
            f.write(SECRET)
    os.symlink(os.path.join(workdir, "secret.txt"), os.path.join(dist, "leak.txt"))
    os.symlink(os.path.join(workdir, "secretdir"), os.path.join(dist, "outside"))
    os.symlink("x.png", os.path.join(dist, "assets", "inner-link.png"))
    return dist


def body_of(path):
    with open(path, "rb") as f:
        return f.read()


class ViewerFixture(TestCase):
    def setUp(self):
        super().setUp()
        self.orthanc = self.start(Orthanc(self.workdir))
        cohort, self.man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=2, rows=16,
                                             cols=16)
        self.orthanc.upload([os.path.join(cohort, i["file"]) for i in self.man["instances"]])
        self.dist = make_dist(self.workdir)

    def bridge(self, gateway=None, viewer=True):
        gw = {"port": harness.free_port(), "bind": "127.0.0.1"}
        if viewer:
            gw["viewer"] = {"path": P, "dir": self.dist, "upstream": AE}
        gw.update(gateway or {})
        b = self.start(Bridge(self.workdir, {"upstreams": [{"ae_title": AE, "base_url": self.orthanc.dicomweb_url}],
                                             "gateway": gw, "spool": {"dir": os.path.join(self.workdir, "spool")},
                                             "log": {"level": "debug"}}))
        harness.wait_port(gw["port"], b.proc, log=b.log_path)
        b.gw_port = gw["port"]
        return b

    def get(self, bridge, target, headers=None, method="GET"):
        return raw_request(bridge.gw_port, method, target, headers)


class ViewerTest(ViewerFixture):
    def test_the_viewer_is_served_under_the_prefix(self):
        bridge = self.bridge()
        index = moved(INDEX.encode())
        self.assertNotIn(b'="/a', index)
        for target in (P + "/", P + "/index.html", P + "/?x=1", P + "/viewer?StudyInstanceUIDs=1.2.3",
                       P + "/viewer/dicomweb", P + "/missing.js", P + "/assets/", P + "/assets", P + "/empty-dir",
                       P + "/index.html/x", P + "/dicom-webx"):
            code, h, body = self.get(bridge, target)
            self.assertEqual(code, 200, "GET %s: %d %s" % (target, code, body[:200]))
            self.assertEqual(body, index, "GET %s: index.html moved under the prefix" % target)
            self.assertEqual(h.get("content-type"), "text/html; charset=utf-8", target)
            self.assertEqual(h.get("cache-control"), "no-cache", target)
            self.assertEqual(int(h.get("content-length", -1)), len(index), target)
        for target, location in ((P, P + "/"), (P + "?a=1&b=2", P + "/?a=1&b=2")):
            code, h, _ = self.get(bridge, target)
            self.assertEqual((code, h.get("location")), (301, location), target)

        # app-config.js is the bridge's, not the file of that name in the folder; node reads it as OHIF would.
        code, h, body = self.get(bridge, P + "/app-config.js")
        self.assertEqual(code, 200, body[:200])
        self.assertEqual(h.get("content-type"), "text/javascript; charset=utf-8")
        self.assertEqual(h.get("cache-control"), "no-cache")
        js = os.path.join(self.workdir, "app-config.js")
        with open(js, "wb") as f:
            f.write(body)
        p = run(["node", "-e", "global.window = {}; require(process.argv[1]); console.log(JSON.stringify(window.config))",
                 js], timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout)
        cfg = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(cfg["routerBasename"], P)
        self.assertTrue(cfg["showStudyList"])
        ds = cfg["dataSources"]
        self.assertEqual(len(ds), 1)
        self.assertEqual(cfg["defaultDataSourceName"], ds[0]["sourceName"])
        for root in ("qidoRoot", "wadoRoot", "wadoUriRoot"):
            self.assertEqual(ds[0]["configuration"][root], P + "/dicom-web/" + AE, root)

        # Bundles and CSS moved under the prefix, with their exact length; everything else as it is on disk.
        hwm = harness.vm_kib(bridge.proc.pid, "VmHWM")
        bundle = body_of(os.path.join(self.dist, BUNDLE))
        code, h, body = self.get(bridge, P + "/" + BUNDLE)
        self.assertEqual(code, 200)
        self.assertEqual(int(h["content-length"]), len(bundle) + 2 * len(P))
        self.assertTrue(body == moved(bundle), "the webpack public path moved, twice, and nothing else")
        self.assertEqual(h.get("cache-control"), "public, max-age=31536000, immutable", "a hashed name")
        code, h, body = self.get(bridge, P + "/" + WASM)
        self.assertEqual((code, h.get("content-type")), (200, "application/wasm"))
        self.assertTrue(body == body_of(os.path.join(self.dist, WASM)), "the wasm byte for byte")
        grown = harness.vm_kib(bridge.proc.pid, "VmHWM") - hwm
        print("bridge peak RSS grew by %d KiB while sending a %d MB bundle and a %d MB wasm"
              % (grown, len(bundle) >> 20, len(body) >> 20))
        self.assertLess(grown, 16 * 1024, "the files were streamed, not read into memory")
        code, h, body = self.get(bridge, P + "/app.bundle.css")
        self.assertEqual((code, body), (200, moved(CSS)))
        self.assertIn(P.encode() + b"/a34f9d1faa5f3315.woff2", body)
        self.assertIn(b"url(//cdn/y)", body)
        self.assertEqual(h.get("cache-control"), "no-cache", "no hash in its name: revalidated")
        for name, ctype in TYPES.items():
            code, h, body = self.get(bridge, P + "/" + name + "?v=1")
            self.assertEqual((code, h.get("content-type")), (200, ctype), name)
            self.assertEqual(h.get("x-content-type-options"), "nosniff", name)
            self.assertIn(h.get("cache-control"), ("no-cache", "public, max-age=31536000, immutable"), name)
            if name not in (BUNDLE, WASM, "app.bundle.css", "manifest.json"):
                self.assertEqual(body, ("contents of %s\n" % name).encode(), name)
        # The web app manifest's icons, which browsers fetch too.
        code, h, body = self.get(bridge, P + "/manifest.json")
        self.assertEqual((code, body), (200, MANIFEST.replace(b'"/assets', b'"' + P.encode() + b"/assets")))

        # HEAD: the same status and headers, no body.
        for name in ("", BUNDLE, WASM, "app-config.js", "viewer"):
            code, h, _ = self.get(bridge, P + "/" + name)
            hcode, hh, hbody = self.get(bridge, P + "/" + name, method="HEAD")
            self.assertEqual((hcode, hbody), (code, b""), name)
            for k in ("content-type", "content-length", "cache-control", "etag"):
                self.assertEqual(hh.get(k), h.get(k), "HEAD %s: %s" % (name, k))
        # A known version costs a 304.
        _, h, _ = self.get(bridge, P + "/app.bundle.css")
        code, h2, body = self.get(bridge, P + "/app.bundle.css", {"If-None-Match": h["etag"]})
        self.assertEqual((code, body, h2.get("etag")), (304, b"", h["etag"]))
        code, _, _ = self.get(bridge, P + "/app.bundle.css", {"If-None-Match": '"other"'})
        self.assertEqual(code, 200)

    def test_hostile_requests_never_reach_a_file_outside_the_folder(self):
        bridge = self.bridge()
        refused = [
            # dot segments, as sent and as the client may encode them
            (P + "/..", 400), (P + "/../secret.txt", 400), (P + "/assets/../../secret.txt", 400),
            (P + "/./index.html", 400), (P + "/assets/./x.png", 400),
            (P + "/%2e%2e/secret.txt", 400), (P + "/%2E%2E/%2e%2e/etc/passwd", 400), (P + "/..%2fsecret.txt", 400),
            (P + "/assets/%2e%2e%2f%2e%2e%2fsecret.txt", 400), (P + "/%252e%252e/secret.txt", 400),
            (P + "/index.html%00.js", 400), (P + "/..\\secret.txt", 400), (P + "/assets\\..\\..\\secret.txt", 400),
            (P + "//etc/passwd", 400), (P + "/assets//x.png", 400), (P + "/a\"b", 400),
            # hidden names and symbolic links: to a file outside, to a folder outside, to a file inside
            (P + "/.hidden", 404), (P + "/.git/config", 404), (P + "/leak.txt", 404),
            (P + "/outside/secret.txt", 404), (P + "/assets/inner-link.png", 404),
        ]
        log_before = bridge.log().count("viewer refused")
        bundle_before = os.stat(os.path.join(self.dist, BUNDLE))
        for target, want in refused:
            code, h, body = self.get(bridge, target)
            self.assertEqual(code, want, "GET %s: expected %d, saw %d %s" % (target, want, code, body[:200]))
            self.assertNotIn(SECRET, body, target)
            self.assertLess(len(body), 200, "a short refusal for %s" % target)
        # Writes to the viewer's files.
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for target in (P + "/" + BUNDLE, P + "/", P + "/app-config.js", P + "/viewer"):
                code, h, body = self.get(bridge, target, {"Content-Type": "text/plain", "Content-Length": "0"},
                                         method=method)
                self.assertEqual((code, h.get("allow")), (405, "GET, HEAD"), "%s %s: %s" % (method, target, body))
        code, _, _ = raw_request(bridge.gw_port, "POST", "%s/%s" % (P, BUNDLE), {"Host": "x", "Content-Length": "11"},
                                 b"hello world")
        self.assertEqual(code, 405, "POST with a body")
        after = os.stat(os.path.join(self.dist, BUNDLE))
        self.assertEqual((after.st_size, after.st_mtime_ns), (bundle_before.st_size, bundle_before.st_mtime_ns))
        n_refused = len(refused) + 5 * 4 + 1
        lines = [l for l in bridge.log().splitlines() if "viewer refused" in l]
        self.assertEqual(len(lines) - log_before, n_refused, "one log line per refusal:\n" + "\n".join(lines[-5:]))
        self.assertFalse([l for l in lines if "secret" in l or "passwd" in l], "the reason, not the target, is logged")
        # The gateway under the prefix keeps its own allow-list.
        for path in ("/studies/..%5c..%5csystem", "/studies/%2e%2e/%2e%2e/system", "/tools/find", "/"):
            code, _, body = self.get(bridge, P + "/dicom-web/" + AE + path)
            self.assertEqual(code, 400, "GET %s/dicom-web/%s%s: %d %s" % (P, AE, path, code, body[:200]))
        code, _, _ = self.get(bridge, P + "/dicom-web/NOSUCHAE/studies")
        self.assertEqual(code, 404)

    def test_the_gateway_under_the_prefix_writes_the_prefix_into_urls(self):
        bridge = self.bridge()
        inst = self.man["instances"][0]
        st, se = inst["StudyInstanceUID"], inst["SeriesInstanceUID"]
        accept = {"Accept": "application/dicom+json"}
        origin = "http://127.0.0.1:%d" % bridge.gw_port
        for mount in (P, ""):
            root = mount + "/dicom-web/" + AE
            code, _, body = self.get(bridge, root + "/studies?includefield=00081190", accept)
            self.assertEqual(code, 200, body[:300])
            urls = [harness.value(s, "00081190") for s in json.loads(body)]
            self.assertTrue(urls and all(u.startswith(origin + root + "/studies/") for u in urls),
                            "RetrieveURL under %r: %s" % (mount, urls))
            self.assertNotIn(self.orthanc.dicomweb_url.encode(), body)
            code, _, body = self.get(bridge, root + "/studies/%s/series/%s/metadata" % (st, se), accept)
            self.assertEqual(code, 200, body[:300])
            bulk = [a["BulkDataURI"] for m in json.loads(body) for a in m.values()
                    if isinstance(a, dict) and "BulkDataURI" in a]
            self.assertTrue(bulk and all(u.startswith(origin + root + "/studies/") for u in bulk), bulk[:3])
            code, _, body = self.get(bridge, bulk[0][len(origin):],
                                     {"Accept": "multipart/related; type=\"application/octet-stream\""})
            self.assertEqual(code, 200, "the rewritten BulkDataURI works: %s" % body[:200])

    def test_token_and_connection_limit_hold_under_the_prefix(self):
        bridge = self.bridge({"token": "s3cret", "max_connections_per_ip": 2})

        def status(target, headers=None):
            try:
                return self.get(bridge, target, headers)[0]
            except OSError as e:  # closed at accept: reset, or nothing read
                return repr(e)

        def settled(target, headers=None):
            """The status once the bridge has seen earlier connections close (each holds a slot until then)."""
            seen = []
            harness.wait_for(lambda: seen.append(status(target, headers)) or isinstance(seen[-1], int), timeout=10)
            return seen[-1]

        root = P + "/dicom-web/" + AE + "/studies"
        self.assertEqual(settled(root), 401, "the gateway's token under the prefix")
        self.assertEqual(settled(root, {"Authorization": "Bearer s3cret"}), 200)
        self.assertEqual(settled(P + "/"), 200, "the viewer's own files need no token")
        # Two idle connections hold this address's slots: a third is closed at once, for the viewer's files too.
        time.sleep(0.5)
        hogs = [socket.create_connection(("127.0.0.1", bridge.gw_port), timeout=10) for _ in range(2)]
        self.addCleanup(lambda: [s.close() for s in hogs])
        time.sleep(0.5)
        code = status(P + "/")
        self.assertNotEqual(code, 200, "a third connection from the same address")
        self.assertTrue(harness.wait_for(lambda: "(gateway.max_connections_per_ip)" in bridge.log(), timeout=5))
        for s in hogs:
            s.close()
        self.assertEqual(settled(P + "/"), 200, "the slots come back once the two are closed")


class ViewerConfigTest(ViewerFixture):
    def check(self, gateway):
        path = os.path.join(self.workdir, "c.json")
        with open(path, "w") as f:
            json.dump({"upstreams": [{"ae_title": AE, "base_url": self.orthanc.dicomweb_url}],
                       "gateway": dict({"port": harness.free_port()}, **gateway),
                       "spool": {"dir": os.path.join(self.workdir, "spool")}}, f)
        return run([harness.BINARY, "check-config", "--config", path]), path

    def test_check_config_and_serve_refuse_a_bad_viewer(self):
        empty = os.path.join(self.workdir, "empty")
        os.makedirs(empty)
        p, _ = self.check({"viewer": {"dir": self.dist}})
        self.assertEqual(p.returncode, 0, p.stdout)
        for viewer, want in (
                ({"dir": self.dist, "path": "ohif"}, 'gateway.viewer.path: "ohif" must start with "/"'),
                ({"dir": self.dist, "path": P + "/"}, "must not end with"),
                ({"dir": self.dist, "path": "/ohif/../x"}, "must not hold a \".\" or \"..\" segment"),
                ({"dir": self.dist, "path": "/ohif%2e"}, "may only hold segments of letters, digits"),
                ({"dir": self.dist, "path": "/dicom-web"}, "the gateway's own DICOMweb root"),
                ({"dir": empty}, "gateway.viewer.dir: %s has no index.html" % empty),
                ({"dir": os.path.join(self.workdir, "nowhere")}, "gateway.viewer.dir: "),
                ({"dir": self.dist, "upstream": "PACS"}, "gateway.viewer.upstream: no upstream has the AE title 'PACS'"),
                ({"dir": self.dist, "colour": "red"}, "gateway.viewer.colour: unknown key")):
            p, path = self.check({"viewer": viewer})
            self.assertEqual(p.returncode, 2, "%s was accepted: %s" % (viewer, p.stdout))
            self.assertIn(want, p.stdout)
        # serve refuses the folder without index.html before it listens.
        p, path = self.check({"viewer": {"dir": empty}})
        p = run([harness.BINARY, "serve", "--config", path], timeout=30)
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertIn("has no index.html", p.stdout)

    def test_without_viewer_nothing_changes(self):
        bridge = self.bridge(viewer=False)
        code, _, body = self.get(bridge, P + "/")
        self.assertEqual(code, 404, body)
        self.assertIn(b"the DICOMweb roots are /dicom-web/<AE title>", body)
        code, _, body = self.get(bridge, "/dicom-web/%s/studies" % AE, {"Accept": "application/dicom+json"})
        self.assertEqual(code, 200, body[:200])


if __name__ == "__main__":
    harness.main()
