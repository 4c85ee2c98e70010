import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { WardenError } from '../errors.ts';
import { INVISIBLE } from '../guard/invisible.ts';
import { APPROVAL_ID, type ApprovalLedger, type ApprovalRecord } from '../state/approvals.ts';

/** Names and reasons come from people and are shown to others: the agent is told a denial's reason. */
const MAX_TEXT = 500;
const LIST_ALL_LIMIT = 100;
/** Pending approvals are bounded per agent (64) and by expiry; this only bounds the output. */
const LIST_PENDING_LIMIT = 1000;

const HELP = `Usage: mcp-warden approvals list --config FILE [--all] [--json]
       mcp-warden approvals show ID --config FILE [--json]
       mcp-warden approvals approve ID --config FILE [--by NAME] [--reason TEXT]
       mcp-warden approvals deny ID --config FILE [--by NAME] [--reason TEXT]

A grant with "approval: required" holds each call until a person decides it here (out of
band: nothing the agent sends can answer it). Each approval binds one agent, one tool and
the call's exact arguments, and is used once. Decisions are written to the broker's state
store (state.dir of the config); running brokers see them within a second.

list     The pending approvals, newest first. --all: the newest 100 of any status
         (pending, approved, used, denied, expired).
show     Every field of one approval, with the arguments the agent sent, in full.
         Read them before you approve: they are exactly what the tool will receive.
approve  Lets the held call proceed, once. If the agent already gave up waiting, its next
         call with the same arguments runs once, until the approval expires.
deny     Refuses the held call; the agent is told the reason. If the agent already gave up
         waiting, it is not told; its next identical call asks for a new approval.

Options:
  --config FILE   the broker's config (warden.yaml)
  --all           list: every status, not only pending
  --json          list, show: JSON instead of text
  --by NAME       approve, deny: who decided (default: your login name)
  --reason TEXT   approve, deny: why; the agent is told a denial's reason
  -h, --help      this help
NAME and TEXT are at most ${MAX_TEXT} characters, one line, without control or invisible characters.
Approval IDs look like ap_ followed by 10 letters a-z and digits 2-7.

Exit 0 on success; 2 for a usage error (a malformed ID, an unknown ID for show, a bad
--by or --reason); 3 for a config problem; 9 when the state store cannot be used;
11 when approve or deny names an approval that does not exist or is no longer pending.
`;

export async function runApprovals(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string' },
      all: { type: 'boolean' },
      json: { type: 'boolean' },
      by: { type: 'string' },
      reason: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [sub, id, ...extra] = positionals;
  if (sub !== 'list' && sub !== 'show' && sub !== 'approve' && sub !== 'deny') {
    throw new WardenError('WARDEN_USAGE', `${sub === undefined ? 'missing subcommand' : `unknown subcommand "${escapeText(sub)}"`}; expected: mcp-warden approvals list|show|approve|deny ...; see mcp-warden approvals --help`);
  }
  const decides = sub === 'approve' || sub === 'deny';
  if (sub === 'list') {
    if (id !== undefined) throw new WardenError('WARDEN_USAGE', `unexpected argument "${escapeText(id)}": approvals list takes no ID; see approvals show ID`);
  } else {
    if (id === undefined) throw new WardenError('WARDEN_USAGE', `expected: mcp-warden approvals ${sub} ID --config FILE; approvals list shows the IDs`);
    if (!APPROVAL_ID.test(id)) throw new WardenError('WARDEN_USAGE', `"${escapeText(id)}" is not an approval ID: they look like ap_ followed by 10 letters a-z and digits 2-7 (see approvals list)`);
  }
  if (extra.length > 0) throw new WardenError('WARDEN_USAGE', `unexpected argument "${escapeText(extra[0] ?? '')}"; see mcp-warden approvals --help`);
  if (values.all && sub !== 'list') throw new WardenError('WARDEN_USAGE', '--all applies to approvals list');
  if (values.json && decides) throw new WardenError('WARDEN_USAGE', '--json applies to approvals list and show');
  if (!decides && (values.by !== undefined || values.reason !== undefined)) throw new WardenError('WARDEN_USAGE', '--by and --reason apply to approvals approve and deny');
  if (values.config === undefined) throw new WardenError('WARDEN_USAGE', `approvals ${sub} needs --config FILE, the broker's config; see mcp-warden approvals --help`);
  const by = decides ? personText('--by', values.by ?? loginName()) : '';
  const reason = decides && values.reason !== undefined && values.reason !== '' ? personText('--reason', values.reason) : '';

  // Loaded only now: usage errors and --help answer without compiling the config schema.
  const { loadConfig } = await import('../config/load.ts');
  const { openStateStore } = await import('../state/store.ts');
  const config = loadConfig(values.config, { state: 'read-only' });
  const store = openStateStore(config.state.dir, 'read-write');
  try {
    const ledger = store.approvals;
    const now = Date.now();
    if (sub === 'list') return listApprovals(ledger, now, values.all === true, values.json === true, values.config);
    if (sub === 'show') return showApproval(ledger, id ?? '', now, values.json === true, values.config, store.file);
    return decide(ledger, id ?? '', sub === 'approve' ? 'approved' : 'denied', by, reason, now);
  } finally {
    store.close();
  }
}

function listApprovals(ledger: ApprovalLedger, now: number, all: boolean, json: boolean, configFile: string): number {
  // What the broker would do at its next prune: a pending approval past its expiry is expired.
  ledger.expire(now);
  const records = ledger.list(all ? { limit: LIST_ALL_LIMIT } : { statuses: ['pending'], limit: LIST_PENDING_LIMIT });
  if (json) {
    process.stdout.write(`${escapeJson(JSON.stringify({ approvals: records.map(toJson) }, null, 2))}\n`);
    return 0;
  }
  if (records.length === 0) {
    process.stdout.write(all ? 'no approvals\n' : 'no pending approvals (--all shows decided and expired ones)\n');
    return 0;
  }
  const lines = records.map((record) => {
    const when = record.status === 'pending' ? `expires ${iso(record.expiresAt)}` : `${record.decidedAt === undefined ? '' : `${iso(record.decidedAt)} `}by ${escapeText(record.decidedBy ?? 'nobody')}`;
    return `${record.id}  ${record.status.padEnd(8)}  ${record.kind.padEnd(11)}  agent ${escapeText(record.agent)}  tool ${escapeText(record.tool)}  requested ${iso(record.requestedAt)}  ${when}\n    arguments: ${preview(record.arguments)}`;
  });
  const pending = records.filter((record) => record.status === 'pending').length;
  const hint = pending > 0 ? `\nRead one in full with: mcp-warden approvals show ID --config ${configFile}\nthen: mcp-warden approvals approve|deny ID --config ${configFile} [--reason TEXT]\n` : '';
  process.stdout.write(`${lines.join('\n')}\n${hint}`);
  return 0;
}

function showApproval(ledger: ApprovalLedger, id: string, now: number, json: boolean, configFile: string, storeFile: string): number {
  ledger.expire(now);
  const record = ledger.get(id);
  if (!record) throw new WardenError('WARDEN_USAGE', `there is no approval ${id} in ${storeFile}; approvals list --all shows the newest ones`, { id });
  if (json) {
    process.stdout.write(`${escapeJson(JSON.stringify(toJson(record), null, 2))}\n`);
    return 0;
  }
  const field = (name: string, value: string) => `  ${`${name}:`.padEnd(18)}${value}`;
  const lines = [
    `approval ${record.id}`,
    field('status', record.status),
    field('kind', record.kind === 'out-of-band' ? 'out-of-band (decided with mcp-warden approvals)' : 'user (asked of the user in the conversation)'),
    field('agent', escapeText(record.agent)),
    field('tool', escapeText(record.tool)),
    field('requested at', iso(record.requestedAt)),
    field('expires at', iso(record.expiresAt)),
    field('decided at', record.decidedAt === undefined ? '-' : iso(record.decidedAt)),
    field('decided by', record.decidedBy === undefined ? '-' : escapeText(record.decidedBy)),
    field('reason', record.reason === undefined || record.reason === '' ? '-' : escapeText(record.reason)),
    field('correlation id', escapeText(record.correlationId)),
    field('arguments sha256', record.argsDigest),
    '  arguments (exactly what the tool receives; unusual characters shown as \\u escapes):',
    ...prettyArguments(record.arguments).split('\n').map((line) => `    ${line}`),
  ];
  if (record.status === 'pending') lines.push('', `Decide with: mcp-warden approvals approve|deny ${record.id} --config ${configFile} [--reason TEXT]`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}

function decide(ledger: ApprovalLedger, id: string, decision: 'approved' | 'denied', by: string, reason: string, now: number): number {
  // Expired first, in its own transaction: decide() rolls its own expiry back when it refuses.
  ledger.expire(now);
  // Anything but a pending, unexpired approval is WARDEN_APPROVAL_NOT_PENDING (exit 11).
  const record = ledger.decide(id, decision, by, reason, now);
  const call = `agent "${escapeText(record.agent)}", tool ${escapeText(record.tool)}`;
  const because = reason === '' ? '' : `, reason "${escapeText(reason)}"`;
  const until = iso(record.expiresAt);
  if (decision === 'approved') {
    const effect = record.kind === 'out-of-band'
      ? `The held call proceeds within a second; if the agent already gave up waiting, its next identical call runs once (until ${until}).`
      : `The agent's next identical call (or its host's answer) runs once (until ${until}).`;
    process.stdout.write(`approved ${record.id} (${call}) by ${escapeText(by)}${because}\n${effect}\n`);
  } else {
    const effect = record.kind === 'out-of-band'
      ? 'The held call is refused within a second and the agent is told the reason; if the agent already gave up waiting, an identical call later asks for a new approval.'
      : 'The call is refused when the agent\'s host answers; an identical call later asks for a new approval.';
    process.stdout.write(`denied ${record.id} (${call}) by ${escapeText(by)}${because}\n${effect}\n`);
  }
  return 0;
}

function toJson(record: ApprovalRecord): Record<string, unknown> {
  return {
    id: record.id,
    status: record.status,
    kind: record.kind,
    agent: record.agent,
    tool: record.tool,
    argsDigest: record.argsDigest,
    arguments: parseArguments(record.arguments),
    correlationId: record.correlationId,
    requestedAt: iso(record.requestedAt),
    expiresAt: iso(record.expiresAt),
    decidedAt: record.decidedAt === undefined ? null : iso(record.decidedAt),
    decidedBy: record.decidedBy ?? null,
    reason: record.reason ?? null,
  };
}

/** The stored arguments are canonical JSON; anything else is shown as the text it is. */
function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function prettyArguments(text: string): string {
  const parsed = parseArguments(text);
  return typeof parsed === 'string' && parsed === text ? escapeText(text) : escapeJson(JSON.stringify(parsed, null, 2));
}

/** One line of the arguments, for the list; show prints them in full. */
function preview(text: string): string {
  const line = escapeJson(text);
  return line.length > 120 ? `${line.slice(0, 120)}… (${text.length} characters; approvals show prints them all)` : line;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * Arguments come from the agent: a bidi override or a zero-width character could make
 * them read differently from what the tool receives. Every invisible or control
 * character is shown as a JSON \\u escape (JSON.stringify escapes only C0 controls), so
 * the output is still valid JSON and shows exactly what is there.
 */
function escapeJson(json: string): string {
  return json.replace(new RegExp(INVISIBLE.source, 'gu'), unicodeEscape);
}

/** The same for single-line text, where tab and newline are escaped too. */
function escapeText(text: string): string {
  return text.replace(new RegExp(`${INVISIBLE.source}|[\\t\\n]`, 'gu'), unicodeEscape);
}

function unicodeEscape(char: string): string {
  let escaped = '';
  for (let i = 0; i < char.length; i++) escaped += `\\u${char.charCodeAt(i).toString(16).padStart(4, '0')}`;
  return escaped;
}

/** The login name, the default for --by (killswitch uses it too). */
export function loginName(): string {
  try {
    return userInfo().username;
  } catch {
    throw new WardenError('WARDEN_USAGE', 'cannot tell who you are (no user name for this process); give --by NAME');
  }
}

/** A name or reason from a person: one line, printable, at most 500 characters. */
export function personText(option: string, text: string): string {
  if (text.trim() === '') throw new WardenError('WARDEN_USAGE', `${option} is empty`);
  if (!text.isWellFormed()) throw new WardenError('WARDEN_USAGE', `${option} is not well-formed text (a lone surrogate)`);
  const hidden = new RegExp(`${INVISIBLE.source}|[\\t\\n]`, 'u').exec(text);
  if (hidden) {
    const code = `U+${hidden[0].codePointAt(0)?.toString(16).toUpperCase().padStart(4, '0')}`;
    throw new WardenError('WARDEN_USAGE', `${option} contains a control or invisible character (${code}); write it on one line with visible characters only`);
  }
  if ([...text].length > MAX_TEXT) throw new WardenError('WARDEN_USAGE', `${option} is ${[...text].length} characters; at most ${MAX_TEXT}`);
  return text;
}
