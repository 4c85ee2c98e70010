import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WardenError } from '../errors.ts';
import type { StateStore } from '../state/store.ts';
import { KILL_SWITCH_STATES, type KillSwitchRecord, type KillSwitchState } from '../state/switches.ts';
import { loginName, personText } from './approvals.ts';
import { configPaths } from './config-paths.ts';

const EFFECTS: Readonly<Record<KillSwitchState, string>> = {
  on: 'every call is refused and every agent\'s tool list is emptied',
  readonly: 'only read tools may be called or listed; write and destructive calls are refused',
  off: 'calls are served as the policy allows, and tool lists are complete again',
};

const HELP = `Usage: mcp-warden killswitch on|readonly|off --config FILE [--by NAME]
       mcp-warden killswitch status --config FILE [--json]

The kill switch stops agents' tool calls without stopping the broker, and without
depending on it: this command writes the broker's state store (state.dir of the config),
which every running broker reads every 250 ms, so it takes effect within a second. It
outlives restarts: a broker started later applies it too.

on        ${EFFECTS.on}
readonly  ${EFFECTS.readonly}
off       ${EFFECTS.off}
status    the current state, who set it and when

Agents connected to a running broker are told their tool list changed, and each running
broker writes the change to its audit trail (killswitch.changed, with the --by name).

Options:
  --config FILE   the broker's config (warden.yaml). Only its state.dir is read, so the
                  switch works even while the config or a manifest is broken.
  --by NAME       on, readonly, off: who set it (default: your login name); one line, at
                  most 500 characters
  --json          status: JSON instead of text
  -h, --help      this help

Exit 0 on success; 2 for a usage error; 3 when the config cannot be read or is not an
mcp-warden config; 9 when the state store cannot be opened or written.
`;

export async function runKillswitch(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string' },
      by: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [sub, ...extra] = positionals;
  const states = KILL_SWITCH_STATES as readonly string[];
  if (sub === undefined || (sub !== 'status' && !states.includes(sub))) {
    const got = sub === undefined ? 'missing state' : `unknown state "${sub.replace(/[^\x20-\x7e]/g, '?').slice(0, 64)}"`;
    throw new WardenError('WARDEN_USAGE', `${got}; expected: mcp-warden killswitch on|readonly|off|status --config FILE`);
  }
  if (extra.length > 0) throw new WardenError('WARDEN_USAGE', `unexpected argument "${(extra[0] ?? '').replace(/[^\x20-\x7e]/g, '?').slice(0, 64)}"; see mcp-warden killswitch --help`);
  if (sub === 'status' && values.by !== undefined) throw new WardenError('WARDEN_USAGE', '--by applies to killswitch on, readonly and off');
  if (sub !== 'status' && values.json) throw new WardenError('WARDEN_USAGE', '--json applies to killswitch status');
  if (values.config === undefined) throw new WardenError('WARDEN_USAGE', `killswitch ${sub} needs --config FILE, the broker's config; see mcp-warden killswitch --help`);
  const by = sub === 'status' ? '' : personText('--by', values.by ?? loginName());

  // Loaded only now: usage errors and --help answer at once.
  const { openStateStore, STATE_FILE } = await import('../state/store.ts');
  const dir = (await configPaths(values.config)).stateDir;
  const file = join(dir, STATE_FILE);
  if (sub === 'status') return status(openStateStore(dir, 'read-only'), file, values.json === true);

  const existed = existsSync(file);
  const state = sub as KillSwitchState;
  const store = openStateStore(dir, 'read-write');
  let before: KillSwitchRecord;
  try {
    before = store.killSwitch.read();
    // Unchanged: nothing is written, so the record keeps who set it and when.
    if (before.state !== state) store.killSwitch.set(state, by, Date.now());
  } finally {
    store.close();
  }
  if (!existed) {
    process.stderr.write(
      `mcp-warden: warning: there was no state store at ${file}: no broker has run with this config yet, or --config is not the running broker's config. ` +
        'The switch is set, and a broker started with this config applies it.\n',
    );
  }
  if (before.state === state) {
    process.stdout.write(`kill switch: ${state}, unchanged${describeChange(before)}\n${capitalized(EFFECTS[state])}.\nstate store: ${file}\n`);
    return 0;
  }
  process.stdout.write(
    `kill switch: ${state} (was ${before.state}), set by ${by}\n` +
      `Running brokers apply it within a second: ${EFFECTS[state]}.\n` +
      `state store: ${file}\n`,
  );
  return 0;
}

/** store: opened read-only, so a missing store reads as off and nothing is created. */
function status(store: StateStore, file: string, json: boolean): number {
  let record: KillSwitchRecord;
  try {
    record = store.killSwitch.read();
  } finally {
    store.close();
  }
  const exists = existsSync(file);
  if (json) {
    const changedAt = record.changedAt > 0 ? new Date(record.changedAt).toISOString() : null;
    process.stdout.write(`${JSON.stringify({ state: record.state, changedAt, changedBy: record.changedBy === '' ? null : record.changedBy, stateStore: file, stateStoreExists: exists })}\n`);
    return 0;
  }
  process.stdout.write(`kill switch: ${record.state}${describeChange(record)}\n${capitalized(EFFECTS[record.state])}.\nstate store: ${file}${exists ? '' : ' (not created yet: no broker has run with this config)'}\n`);
  return 0;
}

function describeChange(record: KillSwitchRecord): string {
  if (record.changedAt <= 0) return '';
  // The name was checked when it was set, but the store is a file others can write.
  return ` (set by ${record.changedBy.replace(/[^\x20-\x7e]/g, '?')} at ${new Date(record.changedAt).toISOString()})`;
}

function capitalized(text: string): string {
  return `${text.charAt(0).toUpperCase()}${text.slice(1)}`;
}
