/** The agent's version, reported in `hello` and `info`. */
export const AGENT_VERSION = '0.1.0';
