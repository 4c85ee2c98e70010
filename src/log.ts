import { pino, type Logger } from 'pino';

/**
 * Operational log: always stderr, because stdout is the MCP channel when serving stdio.
 * Synchronous, so a crash does not swallow the last lines.
 */
export function createLogger(level: string): Logger {
  return pino({ name: 'mcp-warden', level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

export type { Logger };
