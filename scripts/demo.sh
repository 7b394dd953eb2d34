#!/usr/bin/env bash
# The main job: build (or reuse) the default image, bring up a demo project VM
# on it, and show it working: the agent answers, a command runs inside the VM.
# Run by `npm run demo` after scripts/bootstrap.sh and the build.
set -euo pipefail
cd "$(dirname "$0")/.."
g() { node bin/goshipctl.cjs "$@"; }

echo "== goshipctl version"
g version
echo
echo "== goshipctl image build (cached after the first run)"
g image build
echo
if g project info demo >/dev/null 2>&1; then
  echo "== an earlier demo project exists: deleting it"
  g project delete demo --force
fi
echo "== goshipctl image warm --cpus 2 --memory 1G   (a template: a VM of the image booted once to a"
echo "   settled guest and saved; projects of that size are then restored from it instead of booted)"
if g image info default --json | node -e '
  const i = JSON.parse(require("fs").readFileSync(0, "utf8"));
  process.exit(i.templates.some((t) => t.name === "default-2c-1024m-10240m" && t.imageKey === i.manifest.key) ? 0 : 1);'; then
  echo "   (there is one for this image build: kept)"
else
  g image warm --cpus 2 --memory 1G
fi
echo
echo "== goshipctl project create demo --cpus 2 --memory 1G --port 8022:22   (restored from the template)"
g project create demo --cpus 2 --memory 1G --port 8022:22
echo
echo "== goshipctl project list"
g project list
echo
echo "== goshipctl vm ping demo"
g vm ping demo
echo
echo "== goshipctl vm exec demo -- uname -a   (runs inside the VM)"
g vm exec demo -- uname -a
echo
echo "== goshipctl vm exec demo -- cloud-init status --wait   (first-boot provisioning by cloud-init, done in the template)"
g vm exec demo -- cloud-init status --wait
echo
echo "== goshipctl vm info demo   (its own hostname, given when it was restored; a 10G disk)"
g vm info demo
echo
echo "== goshipctl app deploy demo hello --command --port 18080:8000 -- /usr/bin/python3 -m http.server 8000"
echo "   (a workload inside the VM, supervised by the guest's systemd; the port is a live forward)"
g app deploy demo hello --command --port 18080:8000 -- /usr/bin/python3 -m http.server 8000
echo
echo "== from the host: GET http://127.0.0.1:18080/"
node -e '
const get = (n) => fetch("http://127.0.0.1:18080/").then((r) => console.log(`HTTP ${r.status} from the app in the VM`), (e) => (n > 0 ? new Promise((r) => setTimeout(r, 500)).then(() => get(n - 1)) : Promise.reject(e)));
get(60).catch((e) => { console.error(`no answer: ${e.message}`); process.exit(1); });'
echo
echo "== goshipctl app list demo"
g app list demo
echo
echo "The demo VM keeps running. Try: goshipctl vm exec demo -- cat /etc/os-release"
echo "Remove it with: node bin/goshipctl.cjs project delete demo --force"
