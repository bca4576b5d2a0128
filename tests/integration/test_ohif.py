"""A real viewer through the gateway: the OHIF viewer (npm @ohif/app, its built dist/) served statically with an
app-config.js whose DICOMweb data source is the bridge's gateway, in front of the OAuth-protected Google-layout
store, opened in Debian's headless chromium driven by playwright-core. The study list shows the test studies
and opening one renders an image (screenshot centre checked for non-black pixels; the screenshots are kept in
<build>/artefacts/static/). Then the same with the bridge serving the viewer itself (gateway.viewer) under
/ohif-dicomweb-bridge with the gateway under it, JPEG-LS studies so that a wasm codec is loaded too, where every
request of the page and its workers must stay under the prefix (what Kaapana's `^/ohif.*` policy lets a user
reach; screenshots in <build>/artefacts/served/). CTest label `browser`: scripts/test runs
it only when chromium is installed; the npm packages come from scripts/install-deps (DWB_NPM_DIR)."""
import http.server
import json
import os
import shutil
import socketserver
import threading

import harness
from harness import TestCase, run
from test_gateway import GatewayFixture

NPM_DIR = os.environ.get("DWB_NPM_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dicomweb-bridge", "npm")
DIST = os.path.join(NPM_DIR, "ohif", "package", "dist")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class StaticOhif:
    """OHIF's dist/ with our app-config.js; unknown paths get index.html (a single-page app's routes)."""

    def __init__(self, config_js):
        class H(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=DIST, **kw)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/app-config.js":
                    body = config_js.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/javascript")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if not os.path.isfile(os.path.join(DIST, path.lstrip("/"))):
                    self.path = "/index.html"
                super().do_GET()

            def log_message(self, *a):
                pass

        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


CONFIG = """window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  defaultDataSourceName: 'dicomweb-bridge',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'dicomweb-bridge',
    configuration: {
      friendlyName: 'dicomweb-bridge gateway',
      name: 'dicomweb-bridge',
      wadoUriRoot: '%(root)s',
      qidoRoot: '%(root)s',
      wadoRoot: '%(root)s',
      qidoSupportsIncludeField: false,
      imageRendering: 'wadors',
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      staticWado: false,
      singlepart: 'bulkdata,video',
      omitQuotationForMultipartRequest: true,
    },
  }],
};
"""


class OhifTest(GatewayFixture):
    def preconditions(self, jpegls=False):
        """The viewer, the browser, and the test studies in the store; JPEG-LS compressed (lossless, same UIDs)
        when jpegls, so that the viewer decodes them with one of its wasm codecs."""
        self.assertTrue(os.path.isfile(os.path.join(DIST, "index.html")),
                        "OHIF's dist/ at %s (scripts/install-deps puts it there)" % DIST)
        self.assertTrue(os.path.isfile(CHROMIUM), "chromium at %s" % CHROMIUM)
        opts = dict(patients=2, studies=1, series=1, instances=3, rows=256, cols=256)
        if not jpegls:
            return self.load(**opts)
        cohort, man = harness.gencohort(self.workdir, **opts)
        files = []
        for i in man["instances"]:
            files.append(os.path.join(cohort, i["file"]) + ".jls")
            run(["dcmcjpls", os.path.join(cohort, i["file"]), files[-1]], check=True)
        self.orthanc.upload(files)
        return man

    def drive(self, app, man, shots_name):
        """Opens the study list at app, then the first study; checks both and returns the driver's result."""
        names = sorted({i["PatientName"].split("^")[0] for i in man["instances"]})
        study = man["instances"][0]["StudyInstanceUID"]
        shots = os.path.join(harness.BUILD_DIR or self.workdir, "artefacts", shots_name)
        os.makedirs(shots, exist_ok=True)
        env = harness.peer_env()
        env["NODE_PATH"] = os.path.join(NPM_DIR, "node_modules")
        p = run(["node", os.path.join(os.path.dirname(os.path.abspath(__file__)), "ohif_drive.js"),
                 json.dumps({"app": app, "names": names, "study": study, "shots": shots,
                             "chromium": CHROMIUM})], timeout=400, env=env)
        try:
            res = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.fail("the browser driver printed no result:\n" + p.stdout[-3000:])
        detail = "\n".join(res["log"][-40:])
        self.assertNotIn("error", res, res.get("error", "") + "\n" + detail)
        for n in names:
            self.assertIn(n, res["studyList"], "the study list shows patient %s" % n)
        print("OHIF: non-black share of the viewport centre %.2f; screenshots in %s" % (res["nonBlank"], shots))
        self.assertGreater(res["nonBlank"], 0.2, "an image is rendered in the viewport\n" + detail)
        self.assertTrue(os.path.isfile(os.path.join(shots, "ohif-viewport.png")))
        self.assertTrue(self.store.seen and all(h.get("Authorization", "").startswith("Bearer ya29.")
                                                for _, _, h in self.store.seen), "only the bridge's token")
        return res

    def test_ohif_lists_the_studies_and_renders_an_image(self):
        man = self.preconditions()
        gw_port = harness.free_port()
        # The viewer's origin must be known to the gateway's CORS list before the bridge starts.
        ohif = StaticOhif(CONFIG % {"root": "http://127.0.0.1:%d/dicom-web/GOOGLE" % gw_port})
        self.addCleanup(ohif.close)
        self.bridge({"port": gw_port, "cors_origins": [ohif.url]})
        self.drive(ohif.url, man, "static")

    def test_the_bridge_serves_ohif_under_a_prefix(self):
        man = self.preconditions(jpegls=True)
        prefix = "/ohif-dicomweb-bridge"
        bridge, _ = self.bridge({"viewer": {"path": prefix, "dir": DIST, "upstream": "GOOGLE"}})
        origin = "http://127.0.0.1:%d" % bridge.gw_port
        res = self.drive(origin + prefix, man, "served")
        urls = [u for u in res["requests"] if not u.startswith(("data:", "blob:"))]
        outside = sorted({u for u in urls if not u.startswith(origin + prefix + "/")})
        self.assertFalse(outside, "requests outside %s%s/ (%d of %d):\n%s"
                         % (origin, prefix, len(outside), len(urls), "\n".join(outside[:30])))
        # What the prefix had to carry: the app's chunks, CSS and workers, and the DICOMweb of the gateway.
        under = [u[len(origin + prefix):].split("?")[0] for u in urls]
        kinds = {"app bundle": [u for u in under if u.startswith("/app.bundle.")],
                 "chunks": [u for u in under if ".bundle." in u and not u.startswith("/app.bundle.")],
                 "css": [u for u in under if u.endswith(".css")],
                 "wasm codec": [u for u in under if u.endswith(".wasm")],
                 "app-config.js": [u for u in under if u == "/app-config.js"],
                 "QIDO-RS": [u for u in under if u.startswith("/dicom-web/GOOGLE/studies") and u.endswith("/studies")],
                 "WADO-RS": [u for u in under if u.startswith("/dicom-web/GOOGLE/studies/") and
                             ("/frames/" in u or "/metadata" in u)]}
        print("OHIF under %s: %d requests, %s" % (prefix, len(urls),
                                                   ", ".join("%s %d" % (k, len(v)) for k, v in kinds.items())))
        for kind, hits in kinds.items():
            self.assertTrue(hits, "the browser loaded %s under the prefix" % kind)


if __name__ == "__main__":
    harness.main()
