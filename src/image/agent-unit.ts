/**
 * The guest agent's systemd unit, shared by images that bake the agent in
 * (src/image/build.ts) and by cloud-init installs into imported images
 * (`agentInstall` in src/cloudinit). One text, so both boot the agent the same way.
 *
 * It starts EARLY: no default dependencies, ordered only after the journal
 * socket and the mount holding the agent, wanted by sysinit.target. It does not wait for udev,
 * the network or cloud-init, so under TCG it answers about as soon as Node can
 * start (see docs/images.md). It finds its port itself
 * (`/dev/virtio-ports/NAME`, else a sysfs scan) and retries while the port is
 * absent, so starting before udev's coldplug is safe.
 */
import { AGENT_PORT_NAME } from '../protocol/index.ts';

/** The directory of the agent in the guest. */
export const AGENT_GUEST_DIR = '/usr/local/lib/goship';

/** Where the bundled agent lives in the guest. */
export const AGENT_GUEST_PATH = `${AGENT_GUEST_DIR}/goship-agent.mjs`;

/** The unit name. */
export const AGENT_UNIT_NAME = 'goship-agent.service';

/** Where the unit file goes in the guest. */
export const AGENT_UNIT_GUEST_PATH = `/etc/systemd/system/${AGENT_UNIT_NAME}`;

/** The Node the agent runs on in the guest (Debian's `nodejs`: 18.x on bookworm). */
export const AGENT_GUEST_NODE = '/usr/bin/node';

/** The unit's ExecStart (src/image/agent-start.ts): runs the agent on that Node, or says on the port why it cannot. */
export const AGENT_START_GUEST_PATH = `${AGENT_GUEST_DIR}/agent-start`;

/** The unit text. `WantedBy=sysinit.target`: enable it with `systemctl enable`. */
export const AGENT_UNIT = `[Unit]
Description=GoShip guest agent (virtio-serial ${AGENT_PORT_NAME})
# Early boot: only the journal socket and the file system holding the agent.
# The root file system is mounted read-write by the initramfs (\`rw\`), so not
# even systemd-remount-fs is waited for. No udev, network or cloud-init: the
# agent waits for its port by itself.
DefaultDependencies=no
After=systemd-journald.socket
RequiresMountsFor=${AGENT_GUEST_DIR}
Before=sysinit.target shutdown.target
Conflicts=shutdown.target
# Never give up restarting: the agent is the only way in when SSH is off.
StartLimitIntervalSec=0

[Service]
Type=simple
# The start script execs ${AGENT_GUEST_NODE} ${AGENT_GUEST_PATH}, or, without a Node
# it can run on, writes a no-agent message on the port and exits (restarted).
ExecStart=/bin/sh ${AGENT_START_GUEST_PATH}
Restart=always
RestartSec=1
# Boot is CPU-bound under TCG (cloud-init's Python, udev, journald start at the
# same moment): the agent goes first.
CPUWeight=1000
IOWeight=1000
# sha256 of file transfers: OpenSSL's scalar code, not its AVX/AVX2/SSSE3/BMI
# code (SHA-NI stays allowed). Under TCG the emulated vector code hashes at
# 28 MiB/s against 100 MiB/s for the scalar code, which made the hash the limit
# of an upload; under KVM the scalar code still hashes far faster than the
# port delivers. Bits: CPUID.1:ECX AVX (28) and SSSE3 (9); CPUID.7:EBX BMI1 (3),
# AVX2 (5), BMI2 (8).
Environment=OPENSSL_ia32cap=~0x1000020000000000:~0x128

[Install]
WantedBy=sysinit.target
`;
