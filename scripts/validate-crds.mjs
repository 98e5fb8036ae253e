// Validates Prometheus-operator objects (ServiceMonitor, PodMonitor, PrometheusRule) against the
// JSON schemas @kubernetes-models/prometheus-operator generates from the operator's CRDs.
// Usage: node scripts/validate-crds.mjs NODE_MODULES_DIR OBJECTS.json  (a JSON array of objects)
// Prints one line per object; exits 1 when one is invalid or of an unknown kind.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

const [modules, file] = process.argv.slice(2);
const objects = JSON.parse(readFileSync(file, "utf8"));
const known = { ServiceMonitor: "v1", PodMonitor: "v1", PrometheusRule: "v1" };
let failed = 0;
for (const obj of objects) {
  const version = known[obj.kind];
  const name = `${obj.kind}/${obj.metadata?.name}`;
  if (!version || obj.apiVersion !== `monitoring.coreos.com/${version}`) {
    console.log(`${name}: no schema for ${obj.apiVersion}`);
    failed++;
    continue;
  }
  const url = pathToFileURL(path.join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com", version, `${obj.kind}.js`));
  const mod = await import(url.href);
  try {
    new mod[obj.kind](obj).validate();
    console.log(`${name}: valid (monitoring.coreos.com/${version} CRD schema)`);
  } catch (e) {
    console.log(`${name}: INVALID: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
