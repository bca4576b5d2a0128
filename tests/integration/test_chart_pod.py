"""The chart installed as Kaapana installs it, run for real: the chart rendered with the values kube-helm passes
(test_chart.helm_template), its ConfigMap, PersistentVolumeClaim and Deployment run by `podman kube play` on the
image scripts/image built (init container as root, the bridge as uid 10001, the chart's memory limit), on the host
network with the pod's ports moved to free loopback ports. A real Orthanc is the store, DCMTK's storescp stands
in for Kaapana's CTP. Checked: the UI parameters are in the bridge's config; C-ECHO; a C-MOVE to KAAPANA arrives
with calling AE kp-<dataset> and called AE kp-<project>, each series in one burst; a C-STORE into the pod reaches
the store through the spool on the claimed volume (root-owned when created, handed to 10001 by the init
container); the viewer path serves OHIF's index.html, its app-config.js and the gateway behind it.

Needs podman, runc and the image (scripts/image; scripts/test builds it before the tests run)."""
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

try:
    import yaml
except ImportError:
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

import harness
from harness import Orthanc, StoreSCP, TestCase, run, status_of, wait_for
from test_chart import CHART, PLATFORM, by_kind, helm_template

with open(os.path.join(CHART, "Chart.yaml")) as _f:
    VERSION = str(yaml.safe_load(_f)["appVersion"])
IMAGE = "localhost/dicomweb-bridge:" + VERSION
CLAIM = "dicomweb-bridge-spool-pv-claim"


def podman_env():
    """podman's settings for this machine, as scripts/image writes them: runc (crun fails on these cgroups) and
    default ulimits this process may grant (podman's defaults exceed the hard limits: runc's setrlimit fails)."""
    path = os.path.join(harness.BUILD_DIR, "containers.conf")
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1048576)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    if nproc == resource.RLIM_INFINITY or nproc > pid_max:
        nproc = pid_max
    with open(path + ".tmp", "w") as f:
        f.write('[containers]\ndefault_ulimits = ["nofile=%d:%d", "nproc=%d:%d"]\n\n[engine]\nruntime = "runc"\n'
                % (nofile, nofile, nproc, nproc))
    os.replace(path + ".tmp", path)
    return dict(os.environ, CONTAINERS_CONF=path)


def podman(*args, timeout=180, check=False):
    p = subprocess.run(["podman"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, env=podman_env())
    if check and p.returncode != 0:
        raise AssertionError("podman %s: %s" % (" ".join(args), p.stdout[-3000:]))
    return p


def dump_tag(path, keyword):
    p = run(["dcmdump", "-q", "+P", keyword, path])
    m = re.search(r"\[(.*?)\]", p.stdout)
    return m.group(1) if m else None


class KaapanaPodTest(TestCase):
    def setUp(self):
        super().setUp()
        if shutil.which("podman") is None or podman("image", "exists", IMAGE).returncode != 0:
            self.skipTest("podman or the image %s is missing: run scripts/image" % IMAGE)

    def play(self, docs, name):
        path = os.path.join(self.workdir, name + ".yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(docs, f)
        self.addCleanup(self.down, path, name)
        p = podman("kube", "play", "--network", "host", path, timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:])
        return path

    def down(self, path, name):
        ctr = self.container()
        if ctr and os.path.isdir(self.workdir):  # kept for a failed test (the harness removes a passed one's)
            with open(os.path.join(self.workdir, name + "-pod.log"), "w") as f:
                f.write(podman("logs", ctr).stdout)
        podman("kube", "down", path)

    def container(self):
        names = podman("ps", "-a", "--format", "{{.Names}}", check=True).stdout.split()
        ctr = [n for n in names if n.startswith("dicomweb-bridge-pod") and n.endswith("-dicomweb-bridge")]
        return ctr[0] if len(ctr) == 1 else None

    def readyz(self, port):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=5) as r:
                return r.status, r.read().decode().strip()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode().strip()
        except OSError as e:
            return None, str(e)

    def test_installed_as_kaapana_installs_it(self):
        orthanc = self.start(Orthanc(self.workdir))
        cohort, man = harness.gencohort(self.workdir, patients=1, studies=3, series=2, instances=3, rows=64, cols=64)
        studies = sorted({i["StudyInstanceUID"] for i in man["instances"]})
        moved, stored, offline = studies
        orthanc.upload([os.path.join(cohort, i["file"]) for i in man["instances"] if i["StudyInstanceUID"] == moved])
        ctp = self.start(StoreSCP(self.workdir, aet="kp-study1", extra_args=["-d"]))
        dimse, http_port, gw = harness.free_port(), harness.free_port(), harness.free_port()
        ui = {"store_url": orthanc.dicomweb_url, "upstream_ae": "ORTHANC", "dataset": "lung", "project": "study1",
              "dimse_node_port": "30112", "google_key_secret": "", "gateway_public_host": ""}
        platform = dict(PLATFORM, registry_url="localhost", kaapana_build_version=VERSION, http_proxy="",
                        https_proxy="")
        rc, docs = helm_template(ui, platform=platform, extra=[
            "--set", "dimse_port=%d" % dimse, "--set", "http_port=%d" % http_port, "--set", "gateway_port=%d" % gw,
            "--set-string", "ctp_host=127.0.0.1", "--set", "ctp_port=%d" % ctp.port])
        self.assertEqual(rc, 0, docs)
        k = by_kind(docs)
        # On the host network podman refuses containerPort declarations (it would map them); in Kubernetes they
        # only name the ports for the probes and Services, which podman does not run.
        pod = k["Deployment"][0]["spec"]["template"]["spec"]
        ports = {p["name"]: p["containerPort"] for p in pod["containers"][0].pop("ports")}
        self.assertEqual(ports, {"dimse": dimse, "http": http_port, "gateway": gw})
        # The claim: podman makes a volume of it. A new volume is root:root 0755, as Kaapana's provisioners make
        # them (podman would copy the image's 10001-owned directory into it at the first mount: done here first, at
        # another path, so that the volume stays as a provisioner leaves it).
        # (kube play makes a volume of the ConfigMap too; a killed earlier run may have left any of them)
        for cleanup in (("pod", "rm", "-f", "dicomweb-bridge-pod-0"), ("volume", "rm", "-f", CLAIM),
                        ("volume", "rm", "-f", "dicomweb-bridge-config")):
            podman(*cleanup)
            self.addCleanup(podman, *cleanup)
        self.play(k["PersistentVolumeClaim"], "claim")
        self.assertEqual(podman("volume", "exists", CLAIM).returncode, 0, "the claim made no volume")
        p = podman("run", "--rm", "--user", "0", "--entrypoint", "sh", "-v", CLAIM + ":/mnt", IMAGE, "-c",
                   "chown 0:0 /mnt && chmod 0755 /mnt && stat -c %u:%g:%a /mnt", check=True)
        self.assertEqual(p.stdout.strip().splitlines()[-1], "0:0:755")

        # Without the init container the bridge cannot use that volume: not ready, and it says why.
        init = pod.pop("initContainers")
        self.assertEqual(len(init), 1)
        init = init[0]
        path = self.play(k["ConfigMap"] + k["Deployment"], "without-init")
        self.assertTrue(wait_for(lambda: self.readyz(http_port)[0] == 503 and "starting" not in self.readyz(http_port)[1],
                                 timeout=60), self.readyz(http_port))
        self.assertIn("upstream ORTHANC: spool not available", self.readyz(http_port)[1])
        self.down(path, "without-init")

        # The init container as rendered (image, user, command, mount). podman 4.3's kube play runs init
        # containers but then loses a race with its own cleanup of them (conmon timeout after 20 s, then "cannot
        # remove container ... as it is running" in 2 of 3 runs here), so it runs as the pod's first step here.
        self.assertEqual(init["image"], IMAGE)
        mount = init["volumeMounts"][0]
        self.assertEqual(mount["name"], "spool")
        p = podman("run", "--rm", "--network", "host", "--user", str(init["securityContext"]["runAsUser"]),
                   "--memory", init["resources"]["limits"]["memory"].replace("Mi", "m"),
                   "-v", "%s:%s" % (CLAIM, mount["mountPath"]), "--entrypoint", init["command"][0], IMAGE,
                   *init["command"][1:])
        self.assertEqual(p.returncode, 0, p.stdout)
        self.play(k["ConfigMap"] + k["Deployment"], "pod")
        self.ctr = self.container()
        self.assertTrue(self.ctr, "no bridge container")

        # The pod as the chart asked for it: uid 10001, the memory limit, the UI parameters in its config.
        self.assertEqual(podman("exec", self.ctr, "id", "-u", check=True).stdout.strip(), "10001")
        limit = pod["containers"][0]["resources"]["limits"]["memory"]
        self.assertEqual(limit, "1Gi")
        mem = podman("inspect", self.ctr, "--format", "{{.HostConfig.Memory}}", check=True).stdout.strip()
        self.assertEqual(int(mem), 1 << 30, "the chart's memory limit on the container")
        cfg = json.loads(podman("exec", self.ctr, "cat", "/etc/dicomweb-bridge/config.json", check=True).stdout)
        self.assertEqual((cfg["upstreams"][0]["ae_title"], cfg["upstreams"][0]["base_url"]),
                         ("ORTHANC", orthanc.dicomweb_url))
        dest = cfg["destinations"][0]
        self.assertEqual((dest["calling_ae_title"], dest["called_ae_title"]), ("kp-lung", "kp-study1"))
        harness.wait_port(dimse, timeout=60)
        self.assertTrue(wait_for(lambda: self.readyz(http_port) == (200, "ready"), timeout=60), self.readyz(http_port))
        owner = podman("exec", self.ctr, "stat", "-c", "%u:%g", "/var/spool/dicomweb-bridge", check=True).stdout.strip()
        self.assertEqual(owner, "10001:10001")

        p = harness.echoscu(dimse, "ORTHANC")
        self.assertEqual(p.returncode, 0, p.stdout)

        # C-MOVE into the CTP stand-in: calling kp-<dataset>, called kp-<project>, a series per burst.
        rows = [i for i in man["instances"] if i["StudyInstanceUID"] == moved]
        series_of = {i["SOPInstanceUID"]: i["SeriesInstanceUID"] for i in rows}
        p = run(["movescu", "-d", "-S", "-aet", "MOVESCU", "-aec", "ORTHANC", "-aem", "KAAPANA",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=" + moved, "127.0.0.1", str(dimse)],
                timeout=180)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        files = ctp.files()
        got = {dump_tag(f, "SOPInstanceUID"): f for f in files}
        self.assertEqual(sorted(got), sorted(series_of))
        for f in files:
            self.assertEqual(dump_tag(f, "SourceApplicationEntityTitle"), "kp-lung", f)
        log = ctp.log()
        # (wait_port's probe connection sent no A-ASSOCIATE-RQ: its names are empty and not matched)
        called = re.findall(r"Called Application Name:[ \t]*(\S+)[ \t]*$", log, re.M)
        calling = re.findall(r"Calling Application Name:[ \t]*(\S+)[ \t]*$", log, re.M)
        self.assertTrue(called and set(called) == {"kp-study1"}, called)
        self.assertTrue(calling and set(calling) == {"kp-lung"}, calling)
        order = [series_of[u] for u in re.findall(r"storing DICOM file: .*/[A-Za-z]+\.([0-9][0-9.]*)\s*$", log, re.M)
                 if u in series_of]
        self.assertEqual(len(order), len(series_of), log[-2000:])
        runs = [s for i, s in enumerate(order) if i == 0 or order[i - 1] != s]
        self.assertEqual(len(runs), len(set(order)), "series interleaved: %s" % order)

        # C-STORE into the pod: through the spool on the volume to the store.
        new = [os.path.join(cohort, i["file"]) for i in man["instances"] if i["StudyInstanceUID"] == stored]
        p = run(["storescu", "-aet", "MODALITY", "-aec", "ORTHANC", "127.0.0.1", str(dimse)] + new, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        want = {i["SOPInstanceUID"] for i in man["instances"] if i["StudyInstanceUID"] == stored}
        self.assertTrue(wait_for(lambda: want <= set(orthanc.instance_uids()), timeout=60),
                        "the C-STOREd instances never reached the store")

        # The viewer path: OHIF's index.html for the prefix, its config pointing at the gateway under the same
        # prefix, and the gateway answering there.
        base = "http://127.0.0.1:%d/ohif-dicomweb-bridge" % gw
        with urllib.request.urlopen(base + "/", timeout=10) as r:
            html = r.read().decode()
            self.assertIn("text/html", r.headers["Content-Type"])
        self.assertIn("OHIF", html)
        self.assertIn('window.PUBLIC_URL="/ohif-dicomweb-bridge/"', html)
        with urllib.request.urlopen(base + "/app-config.js", timeout=10) as r:
            js = r.read().decode()
        self.assertIn("/ohif-dicomweb-bridge/dicom-web/ORTHANC", js)
        req = urllib.request.Request(base + "/dicom-web/ORTHANC/studies", headers={"Accept": "application/dicom+json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            listed = {s["0020000D"]["Value"][0] for s in json.load(r)}
        self.assertEqual(listed, {moved, stored})

        # The store goes away: the probes keep the pod in service, and C-STOREs are still taken (spooled).
        orthanc.stop()

        def unavailable():
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % http_port, timeout=5) as r:
                return re.search(r'^dwb_upstream_available\{upstream="ORTHANC"\} 0$', r.read().decode(), re.M)
        self.assertTrue(wait_for(unavailable, timeout=60), "the bridge never saw the store go")
        self.assertEqual(self.readyz(http_port), (200, "ready"), "a store that is down must not make the pod unready")
        late = [os.path.join(cohort, i["file"]) for i in man["instances"] if i["StudyInstanceUID"] == offline]
        p = run(["storescu", "-aet", "MODALITY", "-aec", "ORTHANC", "127.0.0.1", str(dimse)] + late, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        queued = podman("exec", self.ctr, "find", "/var/spool/dicomweb-bridge", "-name", "*.dcm", check=True).stdout
        self.assertEqual(len(queued.split()), len(late), "the acknowledged instances wait in the spool: " + queued)

        # The operator's console, the Ingress's first path, on the ops port: the page, and the outage as the page
        # shows it (upstream unavailable, the instances queued); read-only from an address outside admin_proxies.
        console = "http://127.0.0.1:%d/dicomweb-bridge" % http_port
        with urllib.request.urlopen(console + "/", timeout=10) as r:
            self.assertIn("text/html", r.headers["Content-Type"])
            self.assertIn("<html", r.read().decode().lower())
        with urllib.request.urlopen(console + "/api/state", timeout=10) as r:
            st = json.load(r)
        up = [u for u in st["upstreams"] if u["ae_title"] == "ORTHANC"][0]
        self.assertEqual((up["state"], up["queue"]["instances"]), ("unavailable", len(late)), up)
        self.assertFalse(st["writable"])
        req = urllib.request.Request(console + "/api/failed/discard", data=b'{"upstream":"ORTHANC","id":"0000000000000000"}',
                                     headers={"Content-Type": "application/json", "X-Forwarded-User": "mallory"})
        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(refused.exception.code, 403)

        logs = podman("logs", self.ctr).stdout
        self.assertNotRegex(logs, r'"level":\s*"(error|fatal)"', logs[-3000:])


if __name__ == "__main__":
    harness.main()
