#!/usr/bin/env bash
# Checks the Helm chart (helm/longshot) with the real tools, offline:
#  - helm v4 `lint --strict` and `template` with the default values and each values file of
#    helm/longshot/ci/ (minimal CPU, 8-GPU production with external etcd, in-chart etcd,
#    monitoring on), plus a MIG resource name and metrics off;
#  - every rendered core object validated (strict) against the OpenAPI schemas of the two newest
#    Kubernetes minors kubernetes-validate knows, each rendered with that --kube-version;
#  - the Prometheus-operator objects (ServiceMonitor, PrometheusRule) validated against the
#    schemas generated from the operator's CRDs (@kubernetes-models/prometheus-operator);
#  - the PrometheusRule's rules through `promtool check rules`;
#  - assertions on the rendered objects (scripts/deploy_check.py), the rendered arguments parsed
#    by the real binary (LONGSHOT_BIN, default target/release/longshot), and values the schema
#    must reject, each with its message.
# The tools are pinned and installed into .deploy-tools/ (scripts/deploy-tools.sh); a missing one
# fails the check, never skips it. The image is checked by scripts/image-check.sh.
# Usage: scripts/deploy-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
chart=helm/longshot

# The binary that parses the rendered arguments (test.sh has built it by now).
longshot=${LONGSHOT_BIN:-target/release/longshot}
[ -x "$longshot" ] || { echo "deploy-check: no $longshot: build it first (cargo build --release -p longshot-cli) or set LONGSHOT_BIN" >&2; exit 1; }
command -v promtool >/dev/null || { echo "deploy-check: promtool is not installed (scripts/install-deps.sh test)" >&2; exit 1; }
eval "$(scripts/deploy-tools.sh)"
echo "==> $(helm version --short), kubectl $(kubectl version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), $(promtool --version 2>&1 | head -1)"

# The two newest Kubernetes minors kubernetes-validate has schemas for.
mapfile -t versions < <(python3 -c '
import kubernetes_validate.utils as kv
from packaging.version import Version
vs = sorted({Version(v) for v in kv.all_versions()})
minors = sorted({(v.major, v.minor) for v in vs})[-2:]
for m in reversed(minors): print(max(str(v) for v in vs if (v.major, v.minor) == m))')
[ ${#versions[@]} -eq 2 ] || { echo "deploy-check: cannot list kubernetes-validate's versions" >&2; exit 1; }

out=.deploy-cache/rendered
rm -rf "$out" && mkdir -p "$out"
declare -A cases=(
  [default]=""
  [cpu-minimal]="-f $chart/ci/cpu-minimal-values.yaml"
  [gpu-production]="-f $chart/ci/gpu-production-values.yaml"
  [etcd-in-chart]="-f $chart/ci/etcd-in-chart-values.yaml"
  [monitoring]="-f $chart/ci/monitoring-values.yaml"
  [mig]="--set workers.gpu.enabled=true --set workers.gpu.resourceName=nvidia.com/mig-3g.40gb"
  [no-metrics]="--set metrics.enabled=false"
  [standby]="-f $chart/ci/standby-values.yaml"
  [insecure]="--set tls.enabled=false"
  [tls-secret]="--set tls.existingSecret=studio-certs"
  [tokens]="--set auth.tokensSecret=studio-tokens --set auth.testTokenSecret=studio-test-token"
)
echo "==> helm lint --strict and helm template (Kubernetes ${versions[*]})"
for case in $(printf '%s\n' "${!cases[@]}" | sort); do
  # shellcheck disable=SC2086
  helm lint --strict --quiet "$chart" ${cases[$case]} >"$out/$case.lint" 2>&1 \
    || { cat "$out/$case.lint" >&2; echo "deploy-check: helm lint --strict failed for $case" >&2; exit 1; }
  for v in "${versions[@]}"; do
    # shellcheck disable=SC2086
    helm template longshot "$chart" --namespace longshot --kube-version "$v" ${cases[$case]} >"$out/$case@$v.yaml"
  done
  echo "  $case: lint ok; $(grep -c '^kind:' "$out/$case@${versions[0]}.yaml") objects"
done

python3 scripts/deploy_check.py "$longshot" "$out" "${versions[@]}"

echo "==> Prometheus-operator objects against the CRD schemas"
node scripts/validate-crds.mjs "$NODE_PATH" "$out/crds.json"
# ... and the validator itself: a ServiceMonitor with a numeric port and a malformed interval must fail.
echo '[{"apiVersion":"monitoring.coreos.com/v1","kind":"ServiceMonitor","metadata":{"name":"broken"},
  "spec":{"selector":{},"endpoints":[{"port":9464,"interval":"30 s"}]}}]' >"$out/broken-crd.json"
if node scripts/validate-crds.mjs "$NODE_PATH" "$out/broken-crd.json"; then
  echo "deploy-check: the CRD validator accepted a broken ServiceMonitor" >&2; exit 1
fi
echo "==> promtool check rules (the PrometheusRule's groups)"
promtool check rules "$out/rules.yaml"

echo "==> values the schema (or the templates) must reject"
rejects=0
reject() { # reject EXPECTED-MESSAGE HELM-ARGS...
  local want=$1; shift
  if msg=$(helm template longshot "$chart" "$@" 2>&1 >/dev/null); then
    echo "  FAIL  helm template $* was accepted"; rejects=$((rejects + 1))
  elif ! grep -qF -- "$want" <<<"$msg"; then
    echo "  FAIL  helm template $*: expected '$want' in: $msg"; rejects=$((rejects + 1))
  else
    echo "  ok    $* -> $(grep -F -- "$want" <<<"$msg" | head -1 | sed 's/^ *//')"
  fi
}
reject "at '/coordinator/replicas': maximum" --set coordinator.replicas=4
reject "coordinator.replicas > 1 needs etcd" --set coordinator.replicas=2 --set etcd.mode=none
reject "coordinator.replicas > 1 needs coordinator.persistence.accessModes to include ReadWriteMany" --set coordinator.replicas=2
reject "auth.tokensSecret needs auth.testTokenSecret" --set auth.tokensSecret=studio-tokens
reject "at '/workers/device': value must be one of 'auto', 'cpu', 'cuda'" --set workers.device=gpu
reject "at '/workers': additional properties 'replica' not allowed" --set workers.replica=3
reject "at '/etcd/external/endpoints': minItems" --set etcd.mode=external
reject "at '/etcd/inChart/replicas': value must be one of 1, 3, 5" --set etcd.inChart.replicas=2
reject "at '/coordinator/overlapTransport'" --set coordinator.overlapTransport=rdma
reject "workers.models is set but workers.weights.source is none" --set 'workers.models[0].name=m' --set 'workers.models[0].dir=d'
reject "monitoring.serviceMonitor / prometheusRule need metrics.enabled" --set metrics.enabled=false --set monitoring.serviceMonitor.enabled=true
[ $rejects -eq 0 ] || { echo "deploy-check: $rejects rejection checks failed" >&2; exit 1; }
echo "==> the chart passed"
