"""The Kaapana extension chart, installed the way Kaapana installs it.

Rendering: tests/chart/helmrender.go, Go's text/template with sprig and Helm's include/tpl/required/toYaml (the
engine Helm uses; Debian's golang-go + golang-github-masterminds-sprig-dev, GOPATH mode). The values are what
Kaapana's kube-helm passes (services/kaapana-admin/kube-helm/.../utils.py, helm_install): the platform release's
`global.*`, then every UI parameter as `global.<param>`, then the chart's own non-empty `global` strings, each as
`--set-string` with spaces removed and commas and braces escaped.

ChartTest checks the rendered objects (UI parameters in the bridge's config, image from the platform registry with
registry-secret, resources, a spool PVC handed to uid 10001, DIMSE alone on a node port inside 80-32000, gateway
and ops ClusterIP behind a NetworkPolicy, the viewer's ingress path under /ohif, probes) and that the bridge accepts
the rendered config. KaapanaPodTest (tests/integration/test_chart_pod.py) runs the rendered objects in podman."""
import json
import os
import re
import subprocess
import sys

try:
    import yaml
except ImportError:  # Debian's python3-yaml (scripts/install-deps) if the interpreter running ctest lacks it
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

import harness
from harness import TestCase, run

CHART = os.path.join(harness.SOURCE_DIR, "docker", "dicomweb-bridge-chart")
RENDERER_SRC = os.path.join(harness.SOURCE_DIR, "tests", "chart", "helmrender.go")

# The platform release's global values as kube-helm reads them (helm get values kaapana-platform-chart): the keys a
# Kaapana 0.6 platform sets that this chart reads or must not override.
PLATFORM = {
    "registry_url": "registry.example.org/kaapana",
    "kaapana_build_version": "0.6.1",
    "services_namespace": "services",
    "admin_namespace": "admin",
    "helm_namespace": "services",
    "fast_data_dir": "/home/kaapana",
    "slow_data_dir": "/home/kaapana",
    "pull_policy_images": "IfNotPresent",
    "pull_policy_pods": "IfNotPresent",
    "http_proxy": "http://squid-proxy-service.admin.svc.cluster.local:3128",
    "https_proxy": "http://squid-proxy-service.admin.svc.cluster.local:3128",
    "storage_class_fast": "kaapana-hostpath-fast-data-dir",
    "internalCidrs": ["10.152.183.0/24", "10.1.0.0/16"],
    "dicom_port": "11112",
    "hostname": "kaapana.example.org",
    "preinstall_extensions": ["ignored"],
}

UI_PARAMS = ("store_url", "upstream_ae", "dataset", "project", "dimse_node_port", "google_key_secret",
             "gateway_public_host")


def renderer():
    """Builds helmrender once per build directory (GOPATH mode against Debian's sprig)."""
    exe = os.path.join(harness.BUILD_DIR, "helmrender")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(RENDERER_SRC):
        env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="",
                   GOCACHE=os.path.join(harness.BUILD_DIR, "go-cache"))
        # test_chart and test_chart_pod may build it at the same time: each into a file of its own, then renamed.
        tmp = "%s.%d.tmp" % (exe, os.getpid())
        p = run(["go", "build", "-o", tmp, RENDERER_SRC], env=env, timeout=300)
        if p.returncode != 0:
            raise AssertionError("building helmrender failed (golang-go, golang-github-masterminds-sprig-dev):\n" +
                                 p.stdout)
        os.replace(tmp, exe)
    return exe


def chart_values():
    with open(os.path.join(CHART, "values.yaml")) as f:
        return yaml.safe_load(f)


def kube_helm_args(ui, platform=None, values=None):
    """The --set / --set-string arguments kube-helm's helm_install builds for an extension install."""
    platform = PLATFORM if platform is None else platform
    values = chart_values() if values is None else values
    sets = {"global." + k: v for k, v in platform.items()}
    sets.pop("global.preinstall_extensions", None)
    sets.pop("global.kaapana_collections", None)
    for k, v in ui.items():
        if ";" not in k and ";" not in str(v):
            sets["global." + k] = v
    for k, v in (values.get("global") or {}).items():
        if isinstance(v, str) and v != "":
            sets["global." + k] = v
        elif isinstance(v, list) and v:
            for i, obj in enumerate(v):
                sets["global.%s[%d]" % (k, i)] = obj
    args = []
    for key, value in sets.items():
        if isinstance(value, str):
            value = (value.replace(",", r"\,").replace(" ", "").replace("\u00a0", "")
                     .replace("{", r"\{").replace("}", r"\}"))
            args += ["--set-string", "%s=%s" % (key, value)]
        elif isinstance(value, list):
            args += ["--set", "%s={%s}" % (key, ",".join(value))]
        else:
            args += ["--set", "%s=%s" % (key, value)]
    return args


def helm_template(ui, platform=None, extra=(), release="dicomweb-bridge"):
    """Renders the chart as kube-helm would install it; returns (returncode, documents or error text)."""
    cmd = [renderer(), "-chart", CHART, "-name", release, "-namespace", "services"] + kube_helm_args(ui, platform)
    cmd += list(extra)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if p.returncode != 0:
        return p.returncode, p.stderr
    return 0, [d for d in yaml.safe_load_all(p.stdout) if d]


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def bridge_config(docs):
    return json.loads(by_kind(docs)["ConfigMap"][0]["data"]["config.json"])


class ChartTest(TestCase):
    def render(self, ui, **kw):
        rc, docs = helm_template(ui, **kw)
        self.assertEqual(rc, 0, docs)
        return docs

    def test_values_leave_the_platform_and_the_user_in_charge(self):
        """kube-helm lets a chart's non-empty global strings override the platform and the user."""
        values = chart_values()
        for k, v in values["global"].items():
            self.assertFalse(isinstance(v, str) and v != "", "global.%s = %r would override the user's choice" % (k, v))
            self.assertIn(k, values["extension_params"], "global.%s is not a UI parameter" % k)
        for p in UI_PARAMS:
            ep = values["extension_params"][p]
            self.assertIn(p, values["global"], "UI parameter %s must be declared in global" % p)
            self.assertTrue(ep.get("definition") and ep.get("help") and ep.get("type"), p)
            self.assertEqual(ep.get("value"), "", p)
        self.assertEqual(values["extension_params"]["doc"]["type"], "doc")
        with open(os.path.join(CHART, "Chart.yaml")) as f:
            chart = yaml.safe_load(f)
        self.assertIn("kaapanaapplication", chart["keywords"])
        self.assertTrue(chart["annotations"]["ui-visible-name"])
        self.assertTrue(chart["annotations"]["documentation"])

    def test_ui_parameters_reach_the_bridge(self):
        ui = {"store_url": "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb",
              "upstream_ae": "GSTORE", "dataset": "lung-ct", "project": "study1", "dimse_node_port": "30112",
              "google_key_secret": "gsa-key", "gateway_public_host": "kaapana.example.org"}
        docs = self.render(ui)
        k = by_kind(docs)
        cfg = bridge_config(docs)
        up = cfg["upstreams"][0]
        self.assertEqual((up["ae_title"], up["base_url"]), ("GSTORE", ui["store_url"]))
        self.assertEqual(up["auth"], {"type": "google_service_account", "key_file": "/run/secrets/google/key.json"})
        dest = cfg["destinations"][0]
        self.assertEqual((dest["ae_title"], dest["calling_ae_title"], dest["called_ae_title"]),
                         ("KAAPANA", "kp-lung-ct", "kp-study1"))
        self.assertEqual((dest["host"], dest["port"], dest["series_burst"]), ("ctp-dicom-service.services.svc", 11112, True))
        self.assertEqual(cfg["gateway"]["public_hosts"], ["kaapana.example.org"])
        self.assertEqual(cfg["gateway"]["viewer"]["upstream"], "GSTORE")
        # Traefik's pod is somewhere in the cluster's networks: its X-Forwarded-Proto must be believed.
        self.assertEqual(cfg["gateway"]["trusted_proxies"], PLATFORM["internalCidrs"])
        dimse = [s for s in k["Service"] if s["spec"]["type"] == "NodePort"][0]
        self.assertEqual(dimse["spec"]["ports"][0]["nodePort"], 30112)
        pod = k["Deployment"][0]["spec"]["template"]["spec"]
        self.assertIn({"name": "google-key", "secret": {"secretName": "gsa-key"}}, pod["volumes"])
        # Spaces in a parameter: kube-helm strips them, commas stay (escaped for --set-string).
        docs = self.render(dict(ui, store_url="https://store.example/a,b/dicomWeb ", dataset="a b"))
        self.assertEqual(bridge_config(docs)["upstreams"][0]["base_url"], "https://store.example/a,b/dicomWeb")
        self.assertEqual(bridge_config(docs)["destinations"][0]["calling_ae_title"], "kp-ab")

    def test_empty_parameters_take_the_documented_defaults(self):
        values = chart_values()
        for ui in ({}, {p: "" for p in UI_PARAMS}):
            cfg = bridge_config(self.render(ui))
            d = lambda p: values["extension_params"][p]["default"]
            self.assertEqual(cfg["upstreams"][0]["base_url"], d("store_url"))
            self.assertEqual(cfg["upstreams"][0]["ae_title"], d("upstream_ae"))
            self.assertNotIn("auth", cfg["upstreams"][0])
            self.assertEqual(cfg["destinations"][0]["calling_ae_title"], "kp-" + d("dataset"))
            self.assertEqual(cfg["destinations"][0]["called_ae_title"], "kp-" + d("project"))
            self.assertNotIn("public_hosts", cfg["gateway"])

    def test_bad_parameters_are_refused_at_install(self):
        for ui, words in (({"dataset": "a-dataset-name-too-long"}, "kp-<dataset>"),
                          ({"project": "x/y"}, "kp-<project>"),
                          ({"upstream_ae": "A-STORE-TITLE-TOO-LONG"}, "upstream_ae"),
                          ({"dimse_node_port": "40000"}, "80-32000"),
                          ({"dimse_node_port": "79"}, "80-32000"),
                          ({"dimse_node_port": "11k"}, "not a number"),
                          ({"store_url": "ftp://store.example/dicomWeb"}, "not an http(s) URL")):
            rc, err = helm_template(ui)
            self.assertNotEqual(rc, 0, "%r rendered" % ui)
            self.assertIn(words, err, ui)
        rc, err = helm_template({}, platform={k: v for k, v in PLATFORM.items() if k != "registry_url"})
        self.assertNotEqual(rc, 0)
        self.assertIn("global.registry_url", err)

    def test_kaapana_conventions(self):
        docs = self.render({})
        k = by_kind(docs)
        for d in docs:
            if d["kind"] != "NetworkPolicy" or d["metadata"]["name"] == "dicomweb-bridge-ingress":
                self.assertEqual(d["metadata"]["namespace"], "services", d["kind"])
        dep = k["Deployment"][0]["spec"]
        self.assertEqual((dep["replicas"], dep["strategy"]["type"]), (1, "Recreate"),
                         "two pods must never drain one spool")
        pod = dep["template"]["spec"]
        labels = dep["template"]["metadata"]["labels"]
        self.assertEqual((labels["network-access-external-ips"], labels["network-access-ctp"]), ("true", "true"))
        self.assertEqual(pod["imagePullSecrets"], [{"name": "registry-secret"}])
        c = pod["containers"][0]
        self.assertEqual(c["image"], "registry.example.org/kaapana/dicomweb-bridge:0.6.1")
        self.assertEqual(c["imagePullPolicy"], "IfNotPresent")
        self.assertEqual(pod["securityContext"]["runAsUser"], 10001)
        env = {e["name"]: e["value"] for e in c["env"]}
        self.assertEqual(env["https_proxy"], PLATFORM["https_proxy"], "the services namespace allows internal egress only")
        # Resources: the services namespace's LimitRange would give 50Mi.
        mib = lambda s: int(s[:-2]) * (1024 if s.endswith("Gi") else 1)
        self.assertGreaterEqual(mib(c["resources"]["requests"]["memory"]), 128)
        self.assertGreaterEqual(mib(c["resources"]["limits"]["memory"]), 512)
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            self.assertEqual((c[probe]["httpGet"]["path"], c[probe]["httpGet"]["port"]), (path, "http"))
        # The spool: a claim kept across uninstall, handed to uid 10001 by an init container of the same image.
        spool = [v for v in pod["volumes"] if v["name"] == "spool"][0]
        pvc = k["PersistentVolumeClaim"][0]
        self.assertEqual(spool["persistentVolumeClaim"]["claimName"], pvc["metadata"]["name"])
        self.assertEqual(pvc["spec"]["storageClassName"], "kaapana-hostpath-fast-data-dir")
        self.assertEqual(pvc["metadata"]["annotations"]["helm.sh/resource-policy"], "keep")
        init = pod["initContainers"][0]
        self.assertEqual((init["image"], init["securityContext"]["runAsUser"]), (c["image"], 0))
        self.assertEqual(init["command"], ["chown", "-R", "10001:10001", "/var/spool/dicomweb-bridge"])
        self.assertIn({"name": "spool", "mountPath": "/var/spool/dicomweb-bridge"}, init["volumeMounts"])
        self.assertTrue(init["resources"]["limits"]["memory"])
        # Only DIMSE on a node port (CTP's way); gateway and ops ClusterIP.
        services = {s["metadata"]["name"]: s for s in k["Service"]}
        self.assertEqual(sorted(services), ["dicomweb-bridge", "dicomweb-bridge-dimse"])
        nodeport = services["dicomweb-bridge-dimse"]["spec"]
        self.assertEqual((nodeport["type"], nodeport["externalTrafficPolicy"]), ("NodePort", "Local"))
        self.assertEqual([(p["name"], p["nodePort"]) for p in nodeport["ports"]], [("dimse", 11113)])
        internal = services["dicomweb-bridge"]["spec"]
        self.assertEqual(internal["type"], "ClusterIP")
        self.assertFalse(any("nodePort" in p for p in internal["ports"]))
        # NetworkPolicies: DIMSE open, gateway and ops only from Traefik and Prometheus; project namespaces may
        # send to DIMSE and nothing else of the bridge.
        pols = {(n["metadata"]["namespace"], n["metadata"]["name"]): n["spec"] for n in k["NetworkPolicy"]}
        own = pols[("services", "dicomweb-bridge-ingress")]
        self.assertEqual([[p["port"] for p in r["ports"]] for r in own["ingress"] if "from" not in r], [["dimse"]])
        guarded = [r for r in own["ingress"] if "from" in r]
        self.assertEqual(sorted(p["port"] for r in guarded for p in r["ports"]), ["gateway", "http"])
        peers = sorted((f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                        f["podSelector"]["matchLabels"]["app.kubernetes.io/name"]) for r in guarded for f in r["from"])
        self.assertEqual(peers, [("admin", "traefik"), ("services", "prometheus-server")])
        proj = pols[("project-admin", "allow-access-to-dicomweb-bridge")]
        self.assertEqual(proj["policyTypes"], ["Egress"])
        self.assertEqual([p["port"] for p in proj["egress"][0]["ports"]], [11112])
        self.assertEqual(proj["egress"][0]["to"][0]["podSelector"]["matchLabels"],
                         {"app.kubernetes.io/name": "dicomweb-bridge"})
        # The viewer's ingress path: under ^/ohif.* (Kaapana's role `user`), to the gateway port, no middleware
        # that no chart defines (Traefik would drop the route).
        ing = k["Ingress"][0]
        ann = ing["metadata"].get("annotations", {})
        self.assertNotIn("traefik.ingress.kubernetes.io/router.middlewares", ann)
        self.assertEqual(ann["traefik.ingress.kubernetes.io/router.entrypoints"], "websecure")
        console, path = ing["spec"]["rules"][0]["http"]["paths"]
        self.assertRegex(path["path"], r"^/ohif")
        self.assertEqual(path["backend"]["service"]["port"]["name"], "gateway")
        cfg = bridge_config(docs)
        self.assertEqual(cfg["gateway"]["viewer"]["path"], path["path"])
        # The first path, which Kaapana's extension link opens: the operator's console on the ops port, outside
        # ^/ohif.* (admins only), writes through the authenticated ingress (admin_proxies = the cluster networks).
        self.assertEqual(console["path"], cfg["http"]["console_path"])
        self.assertNotRegex(console["path"], r"^/ohif")
        self.assertEqual(console["backend"]["service"]["port"]["name"], "http")
        self.assertEqual(cfg["http"]["admin_proxies"], cfg["gateway"]["trusted_proxies"])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual((ports["dimse"], ports["http"], ports["gateway"]),
                         (cfg["listen"]["port"], cfg["http"]["port"], cfg["gateway"]["port"]))

    def test_rendered_config_is_one_the_bridge_accepts(self):
        for ui in ({}, {"google_key_secret": "gsa-key", "gateway_public_host": "kaapana.example.org"}):
            cfg = bridge_config(self.render(ui))
            if ui:
                key = os.path.join(self.workdir, "key.pem")
                run(["openssl", "genpkey", "-algorithm", "RSA", "-out", key], check=True)
                with open(key) as f:
                    sa = {"type": "service_account", "client_email": "x@y", "private_key": f.read()}
                keyfile = os.path.join(self.workdir, "key.json")
                with open(keyfile, "w") as f:
                    json.dump(sa, f)
                cfg["upstreams"][0]["auth"]["key_file"] = keyfile
            cfg["spool"]["dir"] = os.path.join(self.workdir, "spool")
            viewer = os.path.join(self.workdir, "ohif")
            os.makedirs(viewer, exist_ok=True)
            with open(os.path.join(viewer, "index.html"), "w") as f:
                f.write('<html><script>window.PUBLIC_URL="/"</script></html>')
            cfg["gateway"]["viewer"]["dir"] = viewer
            path = os.path.join(self.workdir, "rendered.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            p = run([harness.BINARY, "check-config", "--config", path])
            self.assertEqual(p.returncode, 0, p.stdout)
            self.assertNotRegex(p.stdout, r"(?i)error|unknown", p.stdout)

    def test_readme_explains_every_parameter(self):
        with open(os.path.join(CHART, "README.md")) as f:
            text = f.read()
        for p in UI_PARAMS:
            self.assertIn("`%s`" % p, text, "README must explain " + p)
        for words in ("Install in Kaapana", "/ohif-dicomweb-bridge/", "role", "scripts/image"):
            self.assertIn(words, text)

    def test_compose_demo_parses(self):
        with open(os.path.join(harness.SOURCE_DIR, "docker", "compose.yaml")) as f:
            compose = yaml.safe_load(f)
        self.assertEqual(set(compose["services"]), {"store", "pacs", "bridge"})
        cfg = json.loads(compose["configs"]["bridge"]["content"])
        path = os.path.join(self.workdir, "compose-bridge.json")
        cfg["spool"]["dir"] = os.path.join(self.workdir, "spool")
        with open(path, "w") as f:
            json.dump(cfg, f)
        p = run([harness.BINARY, "check-config", "--config", path])
        self.assertEqual(p.returncode, 0, p.stdout)


if __name__ == "__main__":
    harness.main()
