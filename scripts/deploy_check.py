#!/usr/bin/env python3
"""Checks the Helm chart's rendered output (scripts/deploy-check.sh renders it).

Usage: deploy_check.py LONGSHOT_BIN RENDER_DIR VERSION... — RENDER_DIR holds CASE@VERSION.yaml for the cases
of helm/longshot/ci/ (and `default`), each rendered with `helm template --kube-version VERSION`.
1. every core object is validated (strict: unknown fields are errors) against the Kubernetes
   OpenAPI schemas of each VERSION by kubernetes-validate;
2. the Prometheus-operator objects are written to RENDER_DIR/crds.json (for validate-crds.mjs)
   and the PrometheusRule's spec to RENDER_DIR/rules.yaml (for promtool check rules);
3. assertions on what each case must render, and the rendered coordinator, worker and test-Pod
   arguments parsed by the real `longshot` binary (LONGSHOT_BIN), with --help appended so nothing
   starts (clap rejects an unknown flag or a bad value before it reaches --help).
Prints one line per check and a closing 'N passed, N failed' line; exits 1 on any failure.
"""
import glob
import json
import os
import subprocess
import sys

import kubernetes_validate
import kubernetes_validate.utils as kv
import yaml

CRD_GROUP = "monitoring.coreos.com/"
passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print(f"  ok    {what}")
    else:
        failed += 1
        print(f"  FAIL  {what}")


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(objs, kind, component=None):
    return [o for o in objs if o["kind"] == kind and (component is None or
            o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)]


def one(objs, kind, component=None):
    found = find(objs, kind, component)
    if len(found) != 1:
        raise SystemExit(f"expected one {kind} ({component}), found {len(found)}")
    return found[0]


def container(workload):
    spec = workload["spec"] if workload["kind"] == "Pod" else workload["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def args_of(workload):
    return container(workload)[1].get("args", [])


def arg(workload, flag):
    values = [a.split("=", 1)[1] for a in args_of(workload) if a.startswith(flag + "=")]
    return values[0] if len(values) == 1 else None


def pod_security(objs, case):
    pods = find(objs, "Deployment") + find(objs, "StatefulSet") + find(objs, "Pod")
    for w in pods:
        spec, c = container(w)
        name = f"{case}: {w['kind']}/{w['metadata']['name']}"
        sc = c.get("securityContext", {})
        check(spec["securityContext"].get("runAsNonRoot") is True and spec["securityContext"].get("runAsUser", 0) > 0
              and sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
              and sc.get("capabilities", {}).get("drop") == ["ALL"] and spec.get("automountServiceAccountToken") is False,
              f"{name}: non-root, read-only root filesystem, all capabilities dropped, no token")
    for sa in find(objs, "ServiceAccount"):
        check(sa.get("automountServiceAccountToken") is False, f"{case}: ServiceAccount mounts no token")


def common(objs, case, gpu, monitoring, etcd_mode, metrics=True, tls=True):
    coord = one(objs, "Deployment", "coordinator")
    workers = one(objs, "StatefulSet", "worker")
    wspec, wc = container(workers)
    _, cc = container(coord)
    replicas = coord["spec"]["replicas"]
    check(replicas == 1 or (etcd_mode != "none" and coord["spec"]["strategy"]["type"] == "RollingUpdate"),
          f"{case}: one coordinator, or standbys with etcd ({replicas})")
    check(all(p.get("grpc", {}).get("port") == 8081 for p in (cc["startupProbe"], cc["readinessProbe"], cc["livenessProbe"]))
          and arg(coord, "--health-listen") == "0.0.0.0:8081"
          and all(p.get("grpc", {}).get("port") == 8081 for p in (wc["startupProbe"], wc["readinessProbe"], wc["livenessProbe"]))
          and arg(workers, "--health-listen") == "0.0.0.0:8081",
          f"{case}: probes are gRPC health checks on the plaintext health port 8081 (--health-listen)")
    secret = [o for o in find(objs, "Secret") if o["metadata"]["name"].endswith("-tls")]
    for w, c in ((coord, cc), (workers, wc)):
        a = args_of(w)
        if tls:
            mounted = any(m["name"] == "tls" and m["mountPath"] == "/etc/longshot/tls" for m in c["volumeMounts"])
            check(mounted and arg(w, "--ca") == "/etc/longshot/tls/ca.crt" and arg(w, "--cert") == "/etc/longshot/tls/tls.crt"
                  and arg(w, "--key") == "/etc/longshot/tls/tls.key" and "--insecure" not in a,
                  f"{case}: {w['kind']} runs TLS with the mounted Secret's ca.crt, tls.crt, tls.key")
        else:
            check("--insecure" in a and arg(w, "--cert") is None, f"{case}: {w['kind']} runs --insecure (tls.enabled=false)")
    if not tls:
        check(not secret, f"{case}: no TLS Secret without TLS")
    check(cc["readinessProbe"]["grpc"].get("service") == "longshot.v1.Leader"
          and not cc["livenessProbe"]["grpc"].get("service"),
          f"{case}: ready only while leading (the Service reaches the leader), alive whenever serving")
    if etcd_mode != "none":
        if tls:
            check(arg(coord, "--advertise") == "https://longshot-coordinator.longshot.svc.cluster.local:50051",
                  f"{case}: with TLS a standby names the Service, which reaches the leader (pod IPs are not in the certificate)")
        else:
            check(arg(coord, "--advertise") == "http://$(POD_IP):50051"
                  and any(e["name"] == "POD_IP" and e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP" for e in cc["env"]),
                  f"{case}: a standby names the leader by its pod address")
    check(any(v["mountPath"] == "/var/lib/longshot" for v in cc["volumeMounts"]) and arg(coord, "--data-dir") == "/var/lib/longshot/data",
          f"{case}: coordinator data volume mounted, --data-dir on it")
    limits = wc.get("resources", {}).get("limits", {})
    if gpu:
        check(limits.get(gpu) == 1, f"{case}: each worker has a {gpu} limit of 1 (got {limits})")
    else:
        check(not any("gpu" in k for k in limits), f"{case}: no GPU limit on CPU workers (got {limits})")
    shm = [v for v in wspec["volumes"] if v["name"] == "shm"]
    check(len(shm) == 1 and shm[0].get("emptyDir", {}).get("medium") == "Memory" and shm[0]["emptyDir"].get("sizeLimit")
          and any(m["mountPath"] == "/dev/shm" and m["name"] == "shm" for m in wc["volumeMounts"]),
          f"{case}: /dev/shm is a memory emptyDir with a size limit, mounted in the worker")
    headless = [s for s in find(objs, "Service", "worker") if s["spec"].get("clusterIP") == "None"]
    check(len(headless) == 1 and workers["spec"]["serviceName"] == headless[0]["metadata"]["name"],
          f"{case}: workers' StatefulSet is governed by a headless Service")
    ns = workers["metadata"]["namespace"]
    check(arg(workers, "--advertise") == f"$(POD_NAME).{headless[0]['metadata']['name']}.{ns}.svc.cluster.local:7000"
          and arg(workers, "--id") == "$(POD_NAME)", f"{case}: each worker advertises POD.HEADLESS.NS.svc:7000")
    sp = wc["startupProbe"]
    check(sp.get("grpc", {}).get("port") == 8081 and sp["periodSeconds"] * sp["failureThreshold"] >= 1800,
          f"{case}: worker startupProbe (gRPC, health port: it answers once the models are loaded) allows >= 30 min to load a checkpoint ({sp['periodSeconds'] * sp['failureThreshold']} s)")
    check(len(find(objs, "PodDisruptionBudget", "worker")) == 1, f"{case}: workers have a PodDisruptionBudget")
    env = {e["name"]: e.get("value") for e in wc.get("env", [])}
    check("NCCL_SOCKET_IFNAME" in env, f"{case}: NCCL environment on the workers")
    for w, c in ((coord, cc), (workers, wc)):
        has_flag = arg(w, "--metrics-listen") == "0.0.0.0:9464"
        has_port = any(p.get("name") == "metrics" and p["containerPort"] == 9464 for p in c.get("ports", []))
        check(has_flag == metrics and has_port == metrics,
              f"{case}: {w['kind']} --metrics-listen 0.0.0.0:9464 and port metrics 9464 {'present' if metrics else 'absent'}")
    mon = find(objs, "ServiceMonitor") + find(objs, "PodMonitor") + find(objs, "PrometheusRule") + \
        [c for c in find(objs, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard")]
    if monitoring:
        check(len(find(objs, "ServiceMonitor")) == 1 and len(find(objs, "PrometheusRule")) == 1,
              f"{case}: ServiceMonitor and PrometheusRule rendered")
        cms = [c for c in find(objs, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
        check(len(cms) == 1 and isinstance(json.loads(cms[0]["data"]["longshot.json"]).get("panels"), list),
              f"{case}: Grafana dashboard ConfigMap labelled grafana_dashboard: \"1\" holding dashboard JSON")
    else:
        check(not mon, f"{case}: no monitoring objects when monitoring is disabled (found {[o['kind'] for o in mon]})")
    etcd_sts = find(objs, "StatefulSet", "etcd")
    endpoints = arg(coord, "--etcd")
    if etcd_mode == "none":
        check(not etcd_sts and endpoints is None and arg(workers, "--etcd") is None
              and (arg(workers, "--coordinator") or "").startswith("https://" if tls else "http://"),
              f"{case}: without etcd, workers register with the coordinator")
    else:
        check(endpoints and arg(workers, "--etcd") == endpoints and arg(workers, "--coordinator") is None,
              f"{case}: coordinator and workers share --etcd {endpoints}")
    if etcd_mode == "inChart":
        e = etcd_sts[0] if len(etcd_sts) == 1 else None
        image = container(e)[1]["image"] if e else ""
        check(e is not None and e["spec"]["replicas"] == 3 and image.split(":")[0] in ("gcr.io/etcd-development/etcd", "quay.io/coreos/etcd")
              and len(arg(e, "--initial-cluster").split(",")) == 3 and len(endpoints.split(",")) == 3,
              f"{case}: in-chart etcd: 3 members of the upstream image ({image}), all 3 client URLs used")
    if etcd_mode == "external":
        check(not etcd_sts, f"{case}: no in-chart etcd with external endpoints")
    pols = find(objs, "NetworkPolicy", "worker")
    ok = len(pols) == 1
    if ok:
        # Every rule that opens the worker port (a rule without ports opens all) admits only
        # coordinator or worker pods; any other rule opens the metrics port alone.
        for rule in pols[0]["spec"]["ingress"]:
            ports = [p["port"] for p in rule.get("ports", [])]
            if not ports or 7000 in ports:
                comps = [p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
                         if set(p) == {"podSelector"} else None for p in rule.get("from", [])]
                ok = ok and bool(comps) and set(comps) <= {"coordinator", "worker"}
            else:
                ok = ok and ports == [9464]
    check(ok, f"{case}: NetworkPolicy: only the coordinator and workers reach the worker port (others: metrics only)")
    test = [p for p in find(objs, "Pod") if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    a = args_of(test[0]) if test else []
    check(len(test) == 1 and "submit" in a and "--wait" in a and "--duration=2" in a and "--width=64" in a
          and "--steps=2" in a and any(x.startswith(f"--coordinator={'https' if tls else 'http'}://") for x in a)
          and (("--ca=/etc/longshot/tls/ca.crt" in a) == tls),
          f"{case}: helm test Pod submits a 2-second 64x64 job and waits")
    pod_security(objs, case)


def generated_certificates_serve(binary, objs, case):
    """The chart's generated CA and member certificate (Helm's genCA / genSignedCert, RSA) load in a
    real coordinator, which then serves TLS."""
    import base64, tempfile, time
    secret = [o for o in find(objs, "Secret") if o["metadata"]["name"].endswith("-tls")]
    check(len(secret) == 1 and secret[0]["type"] == "kubernetes.io/tls"
          and set(secret[0]["data"]) == {"ca.crt", "tls.crt", "tls.key"},
          f"{case}: the chart makes a kubernetes.io/tls Secret with ca.crt, tls.crt, tls.key")
    if not secret:
        return
    with tempfile.TemporaryDirectory() as d:
        for k, v in secret[0]["data"].items():
            with open(os.path.join(d, k), "wb") as f:
                f.write(base64.b64decode(v))
        p = subprocess.Popen([binary, "--ca", f"{d}/ca.crt", "coordinator", "--cert", f"{d}/tls.crt", "--key", f"{d}/tls.key",
                              "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", f"{d}/data"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            addr = line.strip().rsplit(" ", 1)[-1]
            ok = line.startswith("coordinator listening on")
            r = subprocess.run([binary, "--ca", f"{d}/ca.crt", "--coordinator", f"https://localhost:{addr.rsplit(':', 1)[-1]}",
                                "workers"], capture_output=True, text=True, timeout=60) if ok else None
        finally:
            p.kill()
            err = p.communicate()[1]
        check(ok and r is not None and r.returncode == 0,
              f"{case}: a coordinator serves TLS with the generated certificate and a client with ca.crt reaches it"
              + ("" if ok and r is not None and r.returncode == 0 else f"\n        {err.strip()} {r.stderr.strip() if r else ''}"))


def cli_accepts(binary, objs, case):
    """The binary parses each workload's rendered arguments, every one of them."""
    for w in find(objs, "Deployment") + find(objs, "StatefulSet", "worker") + find(objs, "Pod"):
        a = args_of(w)
        r = subprocess.run([binary, *a, "--help"], capture_output=True, text=True)
        check(r.returncode == 0, f"{case}: longshot parses the {w['kind']}'s arguments"
              + ("" if r.returncode == 0 else "\n        " + r.stderr.strip().replace("\n", "\n        ")))


def main():
    binary, render_dir, versions = sys.argv[1], sys.argv[2], sys.argv[3:]
    cases = sorted({os.path.basename(p).split("@")[0] for p in glob.glob(os.path.join(render_dir, "*@*.yaml"))})
    crds = []
    print(f"==> kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''}"
          f" --strict, Kubernetes {', '.join(versions)}")
    for case in cases:
        for v in versions:
            objs = load(os.path.join(render_dir, f"{case}@{v}.yaml"))
            core = [o for o in objs if not o["apiVersion"].startswith(CRD_GROUP)]
            errors = []
            for o in core:
                try:
                    kv.validate(o, v, strict=True)
                except (kv.ValidationError, kv.SchemaNotFoundError) as e:
                    errors.append(f"{o['kind']}/{o['metadata']['name']}: {e}")
            check(not errors, f"{case}: {len(core)} core objects valid against Kubernetes {v}"
                  + ("".join("\n        " + e for e in errors)))
            if v == versions[0]:
                crds += [o for o in objs if o["apiVersion"].startswith(CRD_GROUP)]
    # The validator itself: a Deployment with a misspelt field and a string replica count must fail.
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "broken"},
              "spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}},
                       "template": {"metadata": {"labels": {"a": "b"}},
                                    "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolcy": "Always"}]}}}}
    for v in versions:
        try:
            kv.validate(broken, v, strict=True)
            check(False, f"kubernetes-validate {v} rejects a broken Deployment")
        except kv.ValidationError as e:
            check(True, f"kubernetes-validate {v} rejects a broken Deployment ({str(e).splitlines()[0][:90]})")
    with open(os.path.join(render_dir, "crds.json"), "w") as f:
        json.dump(crds, f)
    rules = [o for o in crds if o["kind"] == "PrometheusRule"]
    with open(os.path.join(render_dir, "rules.yaml"), "w") as f:
        yaml.safe_dump({"groups": [g for r in rules for g in r["spec"]["groups"]]}, f)
    check(bool(rules), f"PrometheusRule found for promtool ({len(rules)})")

    print("==> values.schema.json covers every value")
    schema = json.load(open(os.path.join(os.path.dirname(__file__), "..", "helm", "longshot", "values.schema.json")))
    values = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "helm", "longshot", "values.yaml")))
    open_objects = []

    def walk(node, at):
        if "properties" in node and node.get("additionalProperties") is not False:
            open_objects.append(at or "/")
        for k, sub in node.get("properties", {}).items():
            walk(sub, f"{at}/{k}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{at}[]")
    walk(schema, "")
    check(not open_objects, f"every object in the schema forbids unknown keys (open: {open_objects})")
    missing = []

    def cover(value, node, at):
        if isinstance(value, dict) and "properties" in node:
            for k, v in value.items():
                if k not in node["properties"]:
                    missing.append(f"{at}.{k}")
                else:
                    cover(v, node["properties"][k], f"{at}.{k}")
            missing.extend(f"{at}.{k} (required, not in values.yaml)" for k in node.get("required", []) if k not in value)
    cover(values, schema, "")
    check(not missing, f"every key of values.yaml has a schema entry and every required one a default ({missing})")

    print("==> assertions on the rendered objects")
    r = lambda case: load(os.path.join(render_dir, f"{case}@{versions[0]}.yaml"))
    common(r("default"), "default", gpu=None, monitoring=False, etcd_mode="inChart")
    common(r("cpu-minimal"), "cpu-minimal", gpu=None, monitoring=False, etcd_mode="none")
    common(r("etcd-in-chart"), "etcd-in-chart", gpu=None, monitoring=False, etcd_mode="inChart")
    common(r("monitoring"), "monitoring", gpu=None, monitoring=True, etcd_mode="inChart")
    common(r("no-metrics"), "no-metrics", gpu=None, monitoring=False, etcd_mode="inChart", metrics=False)
    standby = r("standby")
    common(standby, "standby", gpu=None, monitoring=False, etcd_mode="inChart")
    pvc = one(standby, "PersistentVolumeClaim", "coordinator")
    check(one(standby, "Deployment", "coordinator")["spec"]["replicas"] == 2 and pvc["spec"]["accessModes"] == ["ReadWriteMany"],
          "standby: two coordinators on one ReadWriteMany data volume")
    prod = r("gpu-production")
    common(prod, "gpu-production", gpu="nvidia.com/gpu", monitoring=False, etcd_mode="external")
    w = one(prod, "StatefulSet", "worker")
    models = [a for a in args_of(w) if a.startswith("--model=")]
    check(models == ["--model=wan2.1-t2v-14b=/models/Wan2.1-T2V-14B-Diffusers", "--model=wan2.1-t2v-1.3b=/models/Wan2.1-T2V-1.3B-Diffusers"],
          f"gpu-production: --model NAME=DIR per entry ({models})")
    spec, c = container(w)
    weights = [v for v in spec["volumes"] if v["name"] == "weights"]
    check(weights and weights[0]["persistentVolumeClaim"] == {"claimName": "wan-weights", "readOnly": True}
          and any(m["name"] == "weights" and m["mountPath"] == "/models" and m.get("readOnly") for m in c["volumeMounts"]),
          "gpu-production: weights from a read-only PVC at /models")
    check(w["spec"]["replicas"] == 8 and arg(one(prod, "Deployment", "coordinator"), "--overlap-transport") == "nccl"
          and spec.get("tolerations") and spec.get("topologySpreadConstraints") and spec.get("nodeSelector"),
          "gpu-production: 8 workers, NCCL overlaps, tolerations, topology spread, node selector")
    tsc = spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"]
    check(tsc == "longshot", f"gpu-production: topologySpreadConstraints are templated (instance: {tsc})")
    for case in cases:
        cli_accepts(binary, r(case), case)
    generated_certificates_serve(binary, r("default"), "default")
    plain = r("insecure")
    common(plain, "insecure", gpu=None, monitoring=False, etcd_mode="inChart", tls=False)
    own = r("tls-secret")
    common(own, "tls-secret", gpu=None, monitoring=False, etcd_mode="inChart")
    vols = container(one(own, "StatefulSet", "worker"))[0]["volumes"]
    check(not [o for o in find(own, "Secret") if o["metadata"]["name"].endswith("-tls")]
          and any(v["name"] == "tls" and v["secret"]["secretName"] == "studio-certs" for v in vols),
          "tls-secret: tls.existingSecret is mounted and no Secret is made")
    tokens = r("tokens")
    common(tokens, "tokens", gpu=None, monitoring=False, etcd_mode="inChart")
    coord = one(tokens, "Deployment", "coordinator")
    spec, c = container(coord)
    check(arg(coord, "--tokens") == "/etc/longshot/tokens/tokens"
          and any(v["name"] == "tokens" and v["secret"]["secretName"] == "studio-tokens" for v in spec["volumes"])
          and any(m["name"] == "tokens" and m["mountPath"] == "/etc/longshot/tokens" and "subPath" not in m
                  for m in c["volumeMounts"])
          and arg(one(r("default"), "Deployment", "coordinator"), "--tokens") is None,
          "tokens: auth.tokensSecret is mounted (no subPath, so updates reach the file) and passed as --tokens")
    test_env = container(one(tokens, "Pod"))[1].get("env", [])
    check(test_env == [{"name": "LONGSHOT_TOKEN", "valueFrom": {"secretKeyRef": {"name": "studio-test-token", "key": "token"}}}],
          f"tokens: the helm test Pod sends the token of auth.testTokenSecret ({test_env})")
    mig = r("mig")
    check(container(one(mig, "StatefulSet", "worker"))[1]["resources"]["limits"].get("nvidia.com/mig-3g.40gb") == 1,
          "mig: the GPU resource name is configurable (nvidia.com/mig-3g.40gb)")
    print(f"deploy-check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
