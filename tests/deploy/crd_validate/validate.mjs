// Validate KEDA and Prometheus Operator objects against their CRD schemas.
// stdin: a JSON array of Kubernetes objects. stdout: one JSON line per object
// of a known kind ({"kind","name","error"}); exit 1 if any is invalid, 2 if a
// CRD kind has no validator here. Other kinds are left to kubernetes-validate.
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const MODELS = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
};
const CRD_GROUPS = ["keda.sh/", "monitoring.coreos.com/"];

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const docs = JSON.parse(Buffer.concat(chunks).toString("utf8"));
let status = 0;
for (const doc of docs) {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const Model = MODELS[key];
  if (!Model) {
    if (CRD_GROUPS.some((g) => doc.apiVersion.startsWith(g))) {
      console.log(JSON.stringify({ kind: key, name: doc.metadata?.name, error: "no validator" }));
      status = Math.max(status, 2);
    }
    continue;
  }
  let error = null;
  try {
    new Model(doc).validate();
  } catch (e) {
    error = String(e.message || e);
    status = Math.max(status, 1);
  }
  console.log(JSON.stringify({ kind: key, name: doc.metadata?.name, error }));
}
process.exit(status);
