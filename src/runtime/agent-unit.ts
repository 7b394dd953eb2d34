/**
 * The guest agent's systemd unit. It starts early (no default dependencies,
 * only the root filesystem), so the agent answers long before cloud-init's
 * final stage, and restarts whenever it exits.
 */
export const AGENT_UNIT = `[Unit]
Description=GoShip guest agent (virtio-serial org.goship.agent.0)
DefaultDependencies=no
After=systemd-remount-fs.service
Before=sysinit.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=simple
ExecStart=/usr/bin/node /usr/local/lib/goship/goship-agent.mjs
Restart=always
RestartSec=1

[Install]
WantedBy=sysinit.target
`;
