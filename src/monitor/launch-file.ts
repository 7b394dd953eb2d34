/** The name of the file the runtime hands a VM's monitor (vms/ID/launch.json). No imports: the monitor reads it first thing. */
export const LAUNCH_FILE = 'launch.json';
