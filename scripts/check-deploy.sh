#!/usr/bin/env bash
# Checks the files under deploy/ and the Dockerfile with the real tools:
#   - Prometheus rules: `promtool check rules`, then `promtool test rules`
#     (deploy/prometheus/keyward-alerts.test.yaml: each alert fires and stays
#     silent when it should);
#   - every PromQL expression of the Grafana dashboards parses (promtool,
#     with Grafana's variables filled in);
#   - the systemd units: `systemd-analyze verify` (unit syntax, directives,
#     the ExecStart binary, the man pages of Documentation=) and
#     `systemd-analyze security --offline` (exposure at most 2.0 of 10);
#   - the compose file's gateway configuration: `keyward gateway --check`;
#   - the Dockerfile and compose.yaml: scripts/check-packaging.py (parsed;
#     no container engine here to build or start them).
# Needs promtool (Debian prometheus), systemd-analyze (systemd), man
# (man-db), a Python with PyYAML and dockerfile-parse ($DEPLOY_PYTHON), and
# the keyward binary ($KEYWARD_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."

KEYWARD_BIN="${KEYWARD_BIN:-${CARGO_TARGET_DIR:-target}/debug/keyward}"
DEPLOY_PYTHON="${DEPLOY_PYTHON:-python3}"
KEYWARD_BIN="$(realpath "$KEYWARD_BIN")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== promtool check rules"
promtool check rules deploy/prometheus/keyward-recording.yaml deploy/prometheus/keyward-alerts.yaml
echo "== promtool test rules"
promtool test rules deploy/prometheus/keyward-alerts.test.yaml

echo "== dashboard expressions parse"
"$DEPLOY_PYTHON" - "$work/dashboards.yaml" <<'PY'
import glob, json, sys
exprs = []
def walk(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "expr" and isinstance(x, str):
                exprs.append(x)
            else:
                walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
for f in sorted(glob.glob("deploy/grafana/*.json")):
    walk(json.load(open(f)))
rules = []
for i, e in enumerate(exprs):
    e = e.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$env", ".*")
    rules.append({"record": f"dashboard:expr:{i}", "expr": e})
json.dump({"groups": [{"name": "dashboards", "rules": rules}]}, open(sys.argv[1], "w"))
print(f"{len(exprs)} expressions")
PY
promtool check rules "$work/dashboards.yaml"

echo "== systemd-analyze verify"
# verify needs ExecStart's binary to exist: the units are checked as
# shipped except for that path, pointed at the binary just built.
mkdir -p "$work/units" "$work/man/man1"
"$KEYWARD_BIN" man --out "$work/man/man1" > /dev/null
for u in deploy/systemd/*.service; do
  sed "s#/usr/local/bin/keyward#$KEYWARD_BIN#g" "$u" > "$work/units/$(basename "$u")"
done
(cd "$work/units" && MANPATH="$work/man" systemd-analyze verify ./*.service)
for u in "$work"/units/*.service; do
  systemd-analyze security --offline=yes --threshold=20 "$u" | tail -1
done

echo "== gateway configuration of compose.yaml"
"$KEYWARD_BIN" gateway --check --config deploy/compose-gateway.toml > /dev/null

echo "== Dockerfile and compose.yaml"
"$DEPLOY_PYTHON" scripts/check-packaging.py
