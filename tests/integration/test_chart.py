"""The Kaapana extension chart and the compose demo are valid: Chart.yaml and values.yaml parse, every template
renders (a small renderer for the {{ .Values.x }} / if / end subset the chart uses) into valid YAML for both
branches of every condition, the rendered bridge config passes check-config, and the Kaapana essentials are
there (kaapanaapplication keyword, namespace, egress/CTP labels, probes, CTP destination, proxy variables), and
one pod at a time (strategy Recreate: two pods must never share the hostPath spool)."""
import json
import os
import re
import shutil
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


def lookup(values, expr):
    cur = {"Values": values}
    for part in expr.strip().lstrip(".").split("."):
        cur = cur[part]
    return cur


def render(text, values):
    out, stack = [], [True]
    for line in text.splitlines():
        m = re.match(r"^\s*\{\{-?\s*if\s+(\S+)\s*-?\}\}\s*$", line)
        if m:
            stack.append(stack[-1] and bool(lookup(values, m.group(1))))
            continue
        if re.match(r"^\s*\{\{-?\s*end\s*-?\}\}\s*$", line):
            stack.pop()
            continue
        if not stack[-1]:
            continue
        out.append(re.sub(r"\{\{-?\s*(\.[A-Za-z0-9_.]+)\s*-?\}\}", lambda mm: str(lookup(values, mm.group(1))), line))
    assert len(stack) == 1, "unbalanced if/end"
    return "\n".join(out) + "\n"


class ChartTest(TestCase):
    def test_chart_renders_to_valid_kubernetes_objects(self):
        with open(os.path.join(CHART, "Chart.yaml")) as f:
            chart = yaml.safe_load(f)
        self.assertIn("kaapanaapplication", chart["keywords"])
        with open(os.path.join(CHART, "values.yaml")) as f:
            values = yaml.safe_load(f)
        for p in ("store_url", "upstream_ae", "dataset", "project"):
            self.assertIn("value", values["extension_params"][p])
        for secret in ("", "google-sa-key"):
            v = json.loads(json.dumps(values))
            v["google_key_secret"] = secret
            v["gateway_cors_origin"] = "https://kaapana.example" if secret else ""
            v["global"]["http_proxy"] = "http://squid:3128"
            v["gateway_public_host"] = "kaapana.example" if secret else ""
            docs, services = {}, {}
            for name in sorted(os.listdir(os.path.join(CHART, "templates"))):
                with open(os.path.join(CHART, "templates", name)) as f:
                    for d in yaml.safe_load_all(render(f.read(), v)):
                        docs[d["kind"]] = d
                        if d["kind"] == "Service":
                            services[d["metadata"]["name"]] = d
                        self.assertEqual(d["metadata"]["namespace"], "services", name)
            spec = docs["Deployment"]["spec"]
            self.assertEqual(spec.get("strategy", {}).get("type"), "Recreate",
                             "two pods must never share the hostPath spool: expected strategy Recreate, saw %r" %
                             spec.get("strategy"))
            self.assertEqual(spec["replicas"], 1)
            self.assertIn("hostPath", [vol for vol in spec["template"]["spec"]["volumes"] if vol["name"] == "spool"][0])
            dep = spec["template"]
            self.assertEqual(dep["metadata"]["labels"]["network-access-external-ips"], "true")
            self.assertEqual(dep["metadata"]["labels"]["network-access-ctp"], "true")
            c = dep["spec"]["containers"][0]
            self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz")
            self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
            container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                self.assertEqual(c[probe]["httpGet"]["port"], "http", probe + " must ask the health port")
            env = {e["name"]: e["value"] for e in c["env"]}
            self.assertEqual(env["https_proxy"], "http://squid:3128")
            # Issue 25: only DIMSE on a node port; the gateway (the store with the bridge's credentials) and the ops
            # port stay inside the cluster, reachable by the ingress controller and Prometheus only.
            self.assertEqual(sorted(services), ["dicomweb-bridge", "dicomweb-bridge-dimse"])
            for svc in services.values():
                node_ports = [p["name"] for p in svc["spec"]["ports"] if "nodePort" in p]
                if svc["spec"].get("type") == "NodePort":
                    self.assertEqual([p["name"] for p in svc["spec"]["ports"]], ["dimse"], "only DIMSE on a node port")
                    self.assertEqual(svc["spec"].get("externalTrafficPolicy"), "Local", "peers' own addresses")
                else:
                    self.assertIn(svc["spec"].get("type", "ClusterIP"), ("ClusterIP",))
                    self.assertEqual(node_ports, [])
            ports = {p["name"]: p for p in services["dicomweb-bridge"]["spec"]["ports"]}
            self.assertEqual(ports["gateway"]["port"], values["gateway_port"], "the gateway port in the Service")
            np = docs["NetworkPolicy"]["spec"]
            self.assertEqual(np["podSelector"]["matchLabels"], {"app.kubernetes.io/name": "dicomweb-bridge"})
            open_rules = [r for r in np["ingress"] if "from" not in r]
            self.assertEqual([[p["port"] for p in r["ports"]] for r in open_rules], [["dimse"]],
                             "only DIMSE is open to every source")
            guarded = [r for r in np["ingress"] if "from" in r]
            self.assertEqual(sorted(p["port"] for r in guarded for p in r["ports"]), ["gateway", "http"])
            peers = sorted(f["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for r in guarded for f in r["from"])
            self.assertEqual(peers, ["prometheus-server", "traefik"])
            # A middleware that no Kaapana chart defines makes Traefik drop the route; Kaapana's auth-check comes
            # from the websecure entrypoint.
            annotations = docs["Ingress"]["metadata"].get("annotations", {})
            self.assertNotIn("traefik.ingress.kubernetes.io/router.middlewares", annotations)
            self.assertEqual(annotations["traefik.ingress.kubernetes.io/router.entrypoints"], "websecure")
            self.assertIn({"name": "gateway", "containerPort": values["gateway_port"]}, c["ports"])
            ing = docs["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]
            self.assertEqual(ing["path"], "/dicom-web/IDC")
            self.assertEqual(ing["backend"]["service"]["port"]["name"], "gateway")
            cfg = json.loads(docs["ConfigMap"]["data"]["config.json"])
            self.assertEqual(cfg["gateway"]["port"], values["gateway_port"])
            self.assertEqual(cfg["gateway"].get("cors_origins", []), ["https://kaapana.example"] if secret else [])
            self.assertEqual(cfg["gateway"].get("public_hosts", []), ["kaapana.example"] if secret else [])
            self.assertEqual(int(container_ports["http"]), cfg["http"]["port"],
                             "the probes' port is where the bridge serves them")
            dest = cfg["destinations"][0]
            self.assertEqual(dest["host"], "ctp-dicom-service.services.svc")
            self.assertEqual((dest["calling_ae_title"], dest["called_ae_title"]), ("kp-idc", "kp-admin"))
            mounts = [m["mountPath"] for m in c["volumeMounts"]]
            self.assertEqual("/run/secrets/google" in mounts, bool(secret))
            # The rendered config is one the bridge accepts (with the key file where the Secret would be).
            if secret:
                key = os.path.join(self.workdir, "key.pem")
                run(["openssl", "genpkey", "-algorithm", "RSA", "-out", key], check=True)
                with open(key) as f:
                    sa = {"type": "service_account", "client_email": "x@y", "private_key": f.read()}
                keyfile = os.path.join(self.workdir, "key.json")
                with open(keyfile, "w") as f:
                    json.dump(sa, f)
                cfg["upstreams"][0]["auth"]["key_file"] = keyfile
            cfg["spool"]["dir"] = os.path.join(self.workdir, "spool")
            path = os.path.join(self.workdir, "rendered.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            p = run([harness.BINARY, "check-config", "--config", path])
            self.assertEqual(p.returncode, 0, p.stdout)

    def test_readme_has_an_ohif_data_source_for_the_gateway(self):
        with open(os.path.join(CHART, "README.md")) as f:
            text = f.read()
        m = re.search(r"```js\n(.*?)```", text, re.S)
        self.assertTrue(m, "an OHIF data-source snippet")
        self.assertIn("dicomweb", m.group(1))
        for root in ("qidoRoot", "wadoRoot"):
            self.assertRegex(m.group(1), root + r": '/dicom-web/IDC'")

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
