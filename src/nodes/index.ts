/** Nodes over SSH: the pure part (addresses, the ssh argv, what ssh's failures mean, which node a command is for). */
export { parseNodeUrl, nodeUrl, shQuote, remoteCommand, sshArgv, sshForwardArgv, sshFailure, type NodeAddress, type SshOptions } from './ssh.ts';
export { routeOf, takeNodeOptions, fileOptions, nodeFiles, FILE_OPTIONS, type Route, type NodeFile } from './route.ts';
