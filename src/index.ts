// GoShip's library API. Scripts import this instead of parsing CLI output.
export { GoshipError, ValidationError, NotSupportedError } from './errors.ts';
export { Layout, FILES, AGENT_PORT_NAME } from './layout.ts';
