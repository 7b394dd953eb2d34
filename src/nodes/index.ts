/** Nodes over SSH: the pure part (addresses, the ssh argv, what ssh's failures mean). */
export { parseNodeUrl, nodeUrl, shQuote, remoteCommand, sshArgv, sshForwardArgv, sshFailure, type NodeAddress, type SshOptions } from './ssh.ts';
