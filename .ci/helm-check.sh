#!/usr/bin/env bash
# Checks the Helm chart in helm/reprise without a cluster or a helm binary:
#   1. `helm lint --strict` (Helm 4 through helm-python-sdk) with the default
#      values and with each variant below;
#   2. renders the chart offline for each variant and checks that its parts
#      fit together (selectors match the pod labels, probes are native gRPC
#      probes on the gRPC port, the Secret holds every key the pod reads, the
#      PodDisruptionBudget exists iff replicas > 1, the ServiceMonitor selects
#      the Service and names its metrics port, the pod is locked down);
#   3. runs `kubernetes-validate --strict` on every rendered manifest against
#      the chart's oldest Kubernetes (1.27) and the newest known (1.37).
#      ServiceMonitor is a CRD kubernetes-validate has no schema for (it would
#      only warn), so ServiceMonitor manifests are left out of that step and
#      checked by step 2 instead; a "no schema" warning for any other kind is
#      a failure (it means a wrong apiVersion or kind).
# Exits non-zero on any failure. Needs python3 and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "helm-check: installing helm-python-sdk and kubernetes-validate into $work/venv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check \
  helm-python-sdk==0.2.2 kubernetes-validate==1.37.0

"$work/venv/bin/python" - helm/reprise "$work/manifests" <<'PY'
import os, subprocess, sys
import yaml
import helm_python as helm

chart_dir, out_dir = sys.argv[1], sys.argv[2]
KUBE_VERSIONS = ["1.27.0", "1.37.0"]
GRPC_PORT, METRICS_PORT = 50051, 9090

JWKS = '{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}'
PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
VARIANTS = {
    "default": {},
    "replicas-3": {"replicaCount": 3},
    "single-replica": {"replicaCount": 1},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "existing-secret": {
        "existingSecret": {"name": "reprise-prod", "databaseUrlKey": "url",
                           "hs256SecretKey": "hs256", "jwksKey": "jwks.json"},
        "auth": {"issuer": "https://issuer.invalid", "audience": "reprise", "bootstrapAdmin": "alice"},
    },
    "chart-secret-all-auth": {
        "database": {"url": "postgres://reprise:pw@db:5432/reprise"},
        "auth": {"hs256Secret": "x" * 40, "publicKey": PEM, "jwks": JWKS, "bootstrapAdmin": "alice"},
        "secrets": {"key": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw=="},
        "config": {"lease": "45s", "chainMaxAttempts": "5", "otlpEndpoint": "http://otel:4317",
                   "chainMaxAge": "30d", "retainChainsFor": "90d", "retainChainsPerPipeline": 500,
                   "retainAuditFor": "400d", "retentionDryRun": True, "retentionInterval": "10m",
                   "maxStages": 1000, "maxWorkflowsPerStage": 2000, "maxWorkflows": 50000},
    },
    "all-together": {
        "replicaCount": 3,
        "image": {"repository": "registry.invalid/reprise", "tag": 1.2, "pullPolicy": "Always"},
        "serviceMonitor": {"enabled": True},
        "existingSecret": {"name": "reprise-prod", "databaseUrlKey": "url", "hs256SecretKey": "hs256"},
        "podDisruptionBudget": {"minAvailable": 2},
    },
}
# Values the chart must refuse to render.
BAD_VARIANTS = {
    "short-hs256-secret": {"auth": {"hs256Secret": "too-short"}},
    "existing-secret-without-url-key": {"existingSecret": {"name": "s", "databaseUrlKey": ""}},
}

passed, failures = 0, []

def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print(f"FAIL {what}")

def lint(variant, values):
    report = helm.lint(chart_dir, values, strict=True, kube_version="v1.27.0")
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + list(report.get("errors") or [])
    for m in bad:
        print(f"  lint [{variant}]: {m}")
    check(not bad, f"helm lint --strict [{variant}]")

def contains(big, small):
    return all(big.get(k) == v for k, v in small.items())

def check_variant(variant, values, docs, by_kind):
    merged = chart.merge_values(values)
    replicas = int(merged["replicaCount"])
    dep = by_kind["Deployment"][0]
    spec = dep["spec"]
    pod = spec["template"]
    pod_labels = pod["metadata"]["labels"]
    check(spec["replicas"] == replicas, f"[{variant}] Deployment replicas == {replicas}")
    check(contains(pod_labels, spec["selector"]["matchLabels"]), f"[{variant}] Deployment selector matches its pods")
    check(spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}, f"[{variant}] rolling one pod at a time")
    (c,) = pod["spec"]["containers"]
    check(c.get("args") == ["serve"], f"[{variant}] container runs `serve`")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}, f"[{variant}] container ports grpc {GRPC_PORT}, metrics {METRICS_PORT}")
    for probe in ("startupProbe", "readinessProbe"):
        check(c.get(probe, {}).get("grpc") == {"port": GRPC_PORT}, f"[{variant}] {probe} is a native gRPC probe on {GRPC_PORT}")
    check(c.get("livenessProbe", {}).get("grpc") == {"port": GRPC_PORT, "service": "liveness"},
          f"[{variant}] livenessProbe asks the health service's `liveness` name on {GRPC_PORT}")
    sc, psc = c["securityContext"], pod["spec"]["securityContext"]
    check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
          and sc.get("capabilities", {}).get("drop") == ["ALL"] and sc.get("runAsNonRoot") is True
          and psc.get("runAsUser") == 10001 and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
          f"[{variant}] pod runs locked down as uid 10001")
    res = c.get("resources", {})
    check(res.get("requests") and res.get("limits"), f"[{variant}] resources have requests and limits")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    check("emptyDir" in volumes.get(mounts.get("/tmp"), {}), f"[{variant}] /tmp is a writable emptyDir")
    env = {e["name"]: e for e in c["env"]}
    check(env.get("REPRISE_LISTEN", {}).get("value") == f"0.0.0.0:{GRPC_PORT}", f"[{variant}] REPRISE_LISTEN")
    check(env.get("REPRISE_METRICS_LISTEN", {}).get("value") == f"0.0.0.0:{METRICS_PORT}", f"[{variant}] REPRISE_METRICS_LISTEN")

    # Every Secret key the pod reads exists in the chart's Secret (when it makes one)
    # or is the key named in values (existingSecret).
    existing = merged["existingSecret"]["name"]
    secret_name = existing or dep["metadata"]["name"]
    refs = [(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in c["env"] if "valueFrom" in e]
    for v in volumes.values():
        if "secret" in v:
            refs += [(v["secret"]["secretName"], item["key"]) for item in v["secret"].get("items", [])]
    check(any(name == "REPRISE_DATABASE_URL" and "valueFrom" in e for name, e in env.items()),
          f"[{variant}] REPRISE_DATABASE_URL comes from a Secret")
    check(all(name == secret_name for name, _ in refs), f"[{variant}] every secret reference names {secret_name}")
    secrets = by_kind.get("Secret", [])
    if existing:
        check(not secrets, f"[{variant}] no Secret created with existingSecret")
    else:
        check(len(secrets) == 1, f"[{variant}] the chart creates its Secret")
        keys = set(secrets[0].get("stringData", {})) if secrets else set()
        missing = {k for _, k in refs} - keys
        check(not missing, f"[{variant}] the Secret holds every key the pod reads (missing: {sorted(missing)})")
    for flag, key in (("REPRISE_AUTH_PUBLIC_KEY_FILE", "publicKey"), ("REPRISE_AUTH_JWKS_FILE", "jwks")):
        if flag in env:
            path = env[flag]["value"]
            check(any(path.startswith(mp + "/") for mp in mounts), f"[{variant}] {flag} points into a mounted volume")

    sa = by_kind.get("ServiceAccount", [])
    check(len(sa) == 1 and sa[0]["metadata"]["name"] == pod["spec"]["serviceAccountName"], f"[{variant}] ServiceAccount exists and is used")

    (svc,) = by_kind["Service"]
    check(contains(pod_labels, svc["spec"]["selector"]), f"[{variant}] Service selects the pods")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    check(set(svc_ports) == {"grpc", "metrics"} and all(p["targetPort"] in ports for p in svc_ports.values()),
          f"[{variant}] Service ports grpc and metrics target container ports")

    pdbs = by_kind.get("PodDisruptionBudget", [])
    check(len(pdbs) == (1 if replicas > 1 else 0), f"[{variant}] PodDisruptionBudget iff replicas > 1")
    for pdb in pdbs:
        check(contains(pod_labels, pdb["spec"]["selector"]["matchLabels"]), f"[{variant}] PodDisruptionBudget selects the pods")
        check(("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"]), f"[{variant}] PodDisruptionBudget sets one of min/max")

    sms = by_kind.get("ServiceMonitor", [])
    check(len(sms) == (1 if merged["serviceMonitor"]["enabled"] else 0), f"[{variant}] ServiceMonitor iff enabled")
    for sm in sms:
        check(sm["apiVersion"] == "monitoring.coreos.com/v1", f"[{variant}] ServiceMonitor apiVersion")
        check(contains(svc["metadata"]["labels"], sm["spec"]["selector"]["matchLabels"]), f"[{variant}] ServiceMonitor selects the Service")
        check(all(ep["port"] in svc_ports and ep.get("path") == "/metrics" for ep in sm["spec"]["endpoints"]),
              f"[{variant}] ServiceMonitor scrapes the Service's metrics port at /metrics")
        check(contains(sm["metadata"]["labels"], merged["serviceMonitor"]["labels"]), f"[{variant}] ServiceMonitor carries its extra labels")

chart = helm.Chart.load(chart_dir)
print(f"helm-check: chart {chart.name} {chart.version}, Helm SDK {helm.helm_sdk_version()}")
validate_files = []
for variant, values in VARIANTS.items():
    lint(variant, values)
    rendered = chart.render(values=values, name="reprise", namespace="deploy", is_install=True)
    docs = []
    os.makedirs(os.path.join(out_dir, variant), exist_ok=True)
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            check("Reprise" in text, f"[{variant}] NOTES.txt renders")
            continue
        file_docs = [d for d in yaml.safe_load_all(text) if d]
        if not file_docs:
            continue
        docs += file_docs
        path = os.path.join(out_dir, variant, os.path.basename(template))
        with open(path, "w") as f:
            f.write(text)
        if all(d["kind"] == "ServiceMonitor" for d in file_docs):
            continue  # a CRD: no schema in kubernetes-validate; checked in check_variant
        validate_files.append(path)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    print(f"helm-check: [{variant}] rendered {', '.join(sorted(f'{k} x{len(v)}' for k, v in by_kind.items()))}")
    check_variant(variant, values, docs, by_kind)

for variant, values in BAD_VARIANTS.items():
    try:
        chart.render(values=values, name="reprise", namespace="deploy", is_install=True)
        check(False, f"[{variant}] render refused")
    except helm.HelmError as e:
        check(True, f"[{variant}] render refused")
        print(f"helm-check: [{variant}] refused as expected: {str(e).splitlines()[-1][:160]}")

kv = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
for version in KUBE_VERSIONS:
    run = subprocess.run([kv, "--strict", "--quiet", "-k", version, *validate_files],
                         capture_output=True, text=True)
    output = (run.stdout + run.stderr).strip()
    if output:
        print(output)
    check(run.returncode == 0 and "WARN" not in output and "ERROR" not in output,
          f"kubernetes-validate --strict -k {version} on {len(validate_files)} manifests")
    print(f"helm-check: kubernetes-validate --strict -k {version}: {len(validate_files)} manifest files, rc={run.returncode}")

print(f"helm-check: {passed} passed, {len(failures)} failed")
if failures:
    for f in failures:
        print(f"  FAILED: {f}")
    sys.exit(1)
PY
