/**
 * The layering of docs/architecture.md, checked by `npm run lint:layers`
 * (part of `npm test`). Arrows point down only; a module is entered through
 * its index.ts; the guest agent takes only the protocol from src/.
 */
const LOWER = '^src/(store|image|cloudinit|qemu|qmp|serial|protocol|kvm-probe|nodes|jail|vmstate)/';

module.exports = {
  forbidden: [
    {
      name: 'cli-calls-the-runtime-only',
      comment: 'src/cli parses flags and prints: it reaches everything through src/runtime/index.ts.',
      severity: 'error',
      from: { path: '^src/cli/' },
      to: { path: '^src/', pathNot: ['^src/cli/', '^src/runtime/index\\.ts$', '^src/errors\\.ts$', '^src/layout\\.ts$'] },
    },
    {
      name: 'one-door-per-module',
      comment: 'Another module is imported through its index.ts, never through its inner files.',
      severity: 'error',
      from: { path: '^src/([^/]+)/' },
      to: { path: '^src/[^/]+/', pathNot: ['^src/$1/', '^src/[^/]+/index\\.ts$'] },
    },
    {
      name: 'arrows-point-down',
      comment: 'The lower modules never import the runtime, the monitor or the CLI.',
      severity: 'error',
      from: { path: LOWER },
      to: { path: '^src/(runtime|monitor|cli)/' },
    },
    {
      name: 'monitor-below-runtime',
      comment: 'The per-VM monitor is a process of its own: it never imports the runtime or the CLI.',
      severity: 'error',
      from: { path: '^src/monitor/' },
      to: { path: '^src/(runtime|cli)/' },
    },
    {
      name: 'qemu-knows-no-qmp-and-no-store',
      comment: 'src/qemu builds argv and runs processes; QMP and the store are assembled in the runtime.',
      severity: 'error',
      from: { path: '^src/qemu/' },
      to: { path: '^src/(qmp|store|serial)/' },
    },
    {
      name: 'protocol-is-self-contained',
      comment: 'src/protocol runs in the guest on Node 18: it imports nothing else of GoShip.',
      severity: 'error',
      from: { path: '^src/protocol/' },
      to: { path: '^src/', pathNot: ['^src/protocol/'] },
    },
    {
      name: 'agent-takes-the-protocol-only',
      comment: 'The guest agent bundle shares src/protocol with the host, nothing else.',
      severity: 'error',
      from: { path: '^guest-agent/' },
      to: { path: '^src/', pathNot: ['^src/protocol/'] },
    },
    {
      name: 'no-test-code-in-the-product',
      comment: 'src/ and guest-agent/ never import test support.',
      severity: 'error',
      from: { path: '^(src|guest-agent)/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'no-cycles',
      severity: 'error',
      from: { path: '^(src|guest-agent)/' },
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.mjs', '.js'] },
  },
};
