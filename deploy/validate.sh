#!/usr/bin/env bash
# Validates deploy/ offline, as CI does:
#   - each Kubernetes overlay rendered by kustomize (`kubectl kustomize`) and every object checked,
#     strictly, against the Kubernetes OpenAPI schemas that kubernetes-validate bundles;
#   - the ServiceMonitor (a CRD, not bundled) against k8s/schemas/servicemonitor.json;
#   - compose.yaml against the Compose specification's schema (bundled in check-jsonschema).
# The validators come from PyPI into a private virtualenv on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VALIDATE_VENV:-$here/../target/validate-venv}"

if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/check-jsonschema" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet kubernetes-validate==1.37.0 check-jsonschema==0.39.0
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "deploy/validate.sh: kubectl (for 'kubectl kustomize') is not on PATH." >&2
  echo "  Install it: https://kubernetes.io/docs/tasks/tools/ (or a standalone kustomize as 'kubectl')." >&2
  exit 1
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

echo "grafana/approval-relay.json:"
"$venv/bin/python" - "$here/grafana/approval-relay.json" "$here/../README.md" <<'PY'
import json, re, sys
dashboard = json.load(open(sys.argv[1]))
readme = open(sys.argv[2]).read()
used = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"relay_[a-z_]+", t["expr"])}
documented = set(re.findall(r"relay_[a-z_]+", readme))
base = lambda m: re.sub(r"_(bucket|count|sum)$", "", m)
missing = sorted(m for m in used if base(m) not in documented)
if missing:
    sys.exit(f"dashboard queries metrics the README does not document: {missing}")
print(f"ok -- {len(dashboard['panels'])} panels, {len(used)} metrics, all documented")
PY

echo "compose.yaml:"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$here/compose.yaml"

for overlay in "$here"/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  kubectl kustomize "$overlay" > "$scratch/$name.yaml"
  echo "k8s/overlays/$name: $(grep -c '^kind:' "$scratch/$name.yaml") objects"
  # Everything but the CRD against the Kubernetes schemas; a warning (unknown kind) is not a pass.
  "$venv/bin/python" - "$scratch/$name.yaml" "$scratch/$name" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if d["kind"] != "ServiceMonitor"]
monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
yaml.safe_dump_all(core, open(sys.argv[2] + ".core.yaml", "w"))
for i, d in enumerate(monitors):
    yaml.safe_dump(d, open(f"{sys.argv[2]}.monitor{i}.yaml", "w"))
PY
  out="$("$venv/bin/kubernetes-validate" --strict "$scratch/$name.core.yaml" 2>&1)" || { echo "$out" >&2; exit 1; }
  if grep -q "^WARN" <<<"$out"; then echo "$out" >&2; exit 1; fi
  echo "  $(grep -c '^INFO' <<<"$out") objects valid against Kubernetes 1.37"
  for monitor in "$scratch/$name".monitor*.yaml; do
    [ -e "$monitor" ] || continue
    "$venv/bin/check-jsonschema" --schemafile "$here/k8s/schemas/servicemonitor.json" "$monitor"
  done
done
