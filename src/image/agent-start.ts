/**
 * How the agent starts in the guest when the guest may lack its runtime.
 *
 * The agent is JavaScript on the guest's Node.js (Debian's `nodejs`, 18 on
 * bookworm). GoShip's own images have it; an imported cloud image may not.
 *
 * - AGENT_START_SCRIPT is the agent unit's ExecStart: it runs the agent on the
 *   guest's Node, or, when there is none it can run on, writes a `no-agent`
 *   message on the agent's port (src/protocol) and exits; systemd runs it again
 *   a few seconds later, so a host that connects late still reads it. The host
 *   then fails at once (EAGENT_RUNTIME) with the reason, instead of waiting for
 *   a hello that never comes.
 * - NODE_SETUP_SCRIPT runs once, from cloud-init's runcmd, before the agent is
 *   enabled on an image whose agent cloud-init installs (an imported image): a
 *   Node 18+ is used as it is; otherwise `nodejs` is installed with the guest's
 *   package manager; when that fails, a marker records what was found and the
 *   start script reports it.
 *
 * Both are POSIX sh, run as root; their text is part of the image key.
 */
import { AGENT_PORT_NAME } from '../protocol/index.ts';
import { AGENT_GUEST_NODE, AGENT_GUEST_PATH } from './agent-unit.ts';
/** Written by NODE_SETUP_SCRIPT when the guest has no usable Node after it: what was found. */
export const NO_NODE_MARKER = '/var/lib/goship/no-node';
/** The install's output (its last line goes into the message). */
export const NODE_INSTALL_LOG = '/var/log/goship-nodejs.log';
/** The oldest Node the agent runs on (the guest's `node` major version). */
export const AGENT_NODE_MIN = 18;

/** The words the host may print: the script keeps only these characters of what it found. */
const SAFE = `tr -cd 'A-Za-z0-9 ._:/()+=-' | cut -c1-300`;

export const AGENT_START_SCRIPT = `#!/bin/sh
# goship-agent: the agent on the guest's Node.js, or a message on its port saying why it cannot run.
agent=${AGENT_GUEST_PATH}
node=${AGENT_GUEST_NODE}
[ -x "$node" ] || node=$(command -v node 2>/dev/null)
# A node installed after the setup found none (newer than its marker) is tried again.
if [ -n "$node" ] && { [ ! -e ${NO_NODE_MARKER} ] || [ "$node" -nt ${NO_NODE_MARKER} ]; }; then
  exec "$node" "$agent"
fi
found=$(cat ${NO_NODE_MARKER} 2>/dev/null | ${SAFE})
msg="no Node.js ${AGENT_NODE_MIN} or newer in the guest for goship-agent (found: \${found:-none})"
if [ -s ${NODE_INSTALL_LOG} ]; then
  msg="$msg; installing nodejs failed: $(tail -n 1 ${NODE_INSTALL_LOG} | ${SAFE})"
fi
echo "goship-agent: $msg" >&2
for f in /sys/class/virtio-ports/*/name; do
  [ -r "$f" ] && [ "$(cat "$f")" = "${AGENT_PORT_NAME}" ] || continue
  d=\${f%/name}
  # Blocks until the host reads the port; the newline first ends any partial line.
  printf '\\n{"t":"no-agent","code":"EAGENT_RUNTIME","message":"%s"}\\n' "$msg" > "/dev/\${d##*/}"
done
sleep 5
exit 1
`;

export const NODE_SETUP_SCRIPT = `#!/bin/sh
# Before goship-agent starts: a Node.js ${AGENT_NODE_MIN}+ for it, installed with the guest's package manager if need be.
usable() {
  n=$(command -v node 2>/dev/null) || return 1
  "$n" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= ${AGENT_NODE_MIN} ? 0 : 1)' 2>/dev/null
}
usable && exit 0
{
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -q update && apt-get -q install -y --no-install-recommends nodejs
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y nodejs
  elif command -v apk >/dev/null 2>&1; then
    apk add nodejs
  else
    echo "no package manager GoShip knows (apt-get, dnf, apk)"
  fi
} > ${NODE_INSTALL_LOG} 2>&1
usable && exit 0
mkdir -p "$(dirname ${NO_NODE_MARKER})"
{ command -v node >/dev/null 2>&1 && node --version 2>/dev/null || echo none; } > ${NO_NODE_MARKER}
exit 0
`;
