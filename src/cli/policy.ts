import { parseArgs } from 'node:util';
import type { CatalogTool } from '../catalog/build.ts';
import { SEPARATOR } from '../catalog/build.ts';
import { CODE_MODE_SERVER, RUN_CODE } from '../catalog/builtin.ts';
import type { AgentPolicy, WardenConfig } from '../config/types.ts';
import { WardenError, isWardenError, type WardenErrorCode } from '../errors.ts';
import { canonicalAddress } from '../guard/address-class.ts';
import { hostOf, type EgressReason } from '../guard/egress-rules.ts';
import { resourceUriProblem } from '../guard/resource-uri.ts';
import type { RateLimit } from '../guard/rate-limits.ts';
import type { SandboxLimitSettings } from '../manifest/types.ts';
import { runLimits } from '../sandbox/failures.ts';
import { INVISIBLE } from '../guard/invisible.ts';
import { findGrant, matchingGrants, type Grant, type SessionScopes } from '../policy/grants.ts';
import { agentsReaching } from '../policy/server-reach.ts';
import {
  matchingPromptGrants,
  matchingResourceGrants,
  matchingServerRequestGrants,
  resourceGrantsFor,
  serversAllowing,
  type PromptGrant,
  type ResourceGrant,
  type ServerRequestGrant,
  type ServerRequestKind,
} from '../policy/surface-grants.ts';
import type { QuarantineRecord } from '../state/store.ts';
import type { KillSwitchRecord } from '../state/switches.ts';
import { resourceServer } from '../surface/resources.ts';
import { requestFacts, type Unmatched } from './egress.ts';

const HELP = `Usage: mcp-warden policy explain --config FILE --agent AGENT --tool TOOL [--json]
       mcp-warden policy explain --config FILE --agent AGENT --prompt PROMPT [--json]
       mcp-warden policy explain --config FILE --agent AGENT --resource URI [--server SERVER] [--json]
       mcp-warden policy explain --config FILE --agent AGENT --server-request sampling|elicitation --server SERVER [--json]
       mcp-warden policy list --config FILE --agent AGENT [--json]

Answers "what would the broker do?" from the config, the signed manifests and the state
store, without changing anything and without a running broker. It answers for a session
without an OAuth access token: grants that name scopes do not count.

explain  The decision for one thing AGENT asks for, with the same rules the broker applies.
         --tool TOOL, a call to the exposed tool TOOL (<server>__<tool>):
           allow            a grant covers the tool and its access class
           needs approval   a grant covers it and asks for a person's approval: out of band
                            (mcp-warden approvals), or by the user in the conversation, with
                            what happens when the agent's host cannot ask
           deny             and why: no such tool (or its server's manifest was refused), no
                            grant covers it, a grant covers the name but not its access
                            class, the kill switch, or the server is quarantined
         Then the facts behind it: the tool's server and access class, whether repeated
         writes are deduplicated, the grant that decided (as a config path such as
         /agents/AGENT/allow/0) and any others that also match, the kill switch, and the
         limits that apply (agent, tool and broker rate and concurrency limits, the call
         timeout, the result cap). For a native HTTP tool, the request it makes (method,
         base URL and path, arguments as {name}); for a code tool, its pinned module
         and its sandbox limits; for code mode (warden__run_code), its limits and caps;
         for a native HTTP tool and for a Streamable HTTP
         server's tool, whether the egress rules allow that request (mcp-warden egress
         check says more): a request they refuse fails whatever the decision.
         --prompt PROMPT, prompts/get of the exposed prompt PROMPT (<server>__<prompt>):
         allow or deny (no such prompt, no grant, the server is quarantined).
         --resource URI, resources/read (and subscribe) of URI: the broker's URI rules first
         (dot segments, encoded separators, control characters... are refused), then the one
         server whose grants cover it (two is ambiguous: refused). With --server, whether
         that server is the one the read goes to.
         --server-request KIND --server SERVER, whether SERVER may ask AGENT's host for
         sampling or elicitation during AGENT's tool calls (default deny), and on what terms.
         Each with the grant that decided, the kill switch and any quarantine.
list     The tools AGENT's tools/list shows with the kill switch off, sorted by name, each
         with its access class, approval, deduplication and tool limits; the prompts its
         prompts/list shows; its resource grants (server and URI patterns); which servers
         may send it which server requests (anything else is denied); and the kill switch,
         when it is not off.

Options:
  --config FILE            the broker's config (warden.yaml)
  --agent AGENT            an agent of that config
  --tool TOOL              explain: the exposed tool name, as the agent sees it
  --prompt PROMPT          explain: the exposed prompt name, as the agent sees it
  --resource URI           explain: a resource URI, as the agent would ask for it
  --server-request KIND    explain: sampling or elicitation, from the server --server names
  --server SERVER          with --server-request (required) or --resource: a server key
  --json                   print one JSON object instead of text
  -h, --help               this help

Exactly one of --tool, --prompt, --resource and --server-request. Exit 0 whenever a
decision or list was printed, whatever it says; 2 for a usage error or an agent that is
not in the config; 3 for a config problem; 9 when the state store cannot be read.
`;

/** Longest option value taken: more than anything the broker accepts (a URI is at most 2048 characters), so the broker's own rules refuse what is too long for it. */
const MAX_ARGUMENT = 4096;

const SELECTORS = ['tool', 'prompt', 'resource', 'server-request'] as const;
const SERVER_REQUEST_KINDS: readonly ServerRequestKind[] = ['sampling', 'elicitation'];

export async function runPolicy(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string' },
      agent: { type: 'string' },
      tool: { type: 'string' },
      prompt: { type: 'string' },
      resource: { type: 'string' },
      'server-request': { type: 'string' },
      server: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [sub, ...extra] = positionals;
  if (sub !== 'explain' && sub !== 'list') {
    throw new WardenError('WARDEN_USAGE', `${sub === undefined ? 'missing subcommand' : `unknown subcommand "${printable(sub)}"`}; expected: mcp-warden policy explain|list --config FILE --agent AGENT ...; see mcp-warden policy --help`);
  }
  if (extra.length > 0) throw new WardenError('WARDEN_USAGE', `unexpected argument "${printable(extra[0] ?? '')}"; see mcp-warden policy --help`);
  for (const [option, value] of Object.entries(values)) {
    if (typeof value === 'string' && value.length > MAX_ARGUMENT) throw new WardenError('WARDEN_USAGE', `--${option} is longer than ${MAX_ARGUMENT} characters`);
  }
  if (values.config === undefined || values.agent === undefined) {
    throw new WardenError('WARDEN_USAGE', `policy ${sub} needs --config FILE and --agent AGENT; see mcp-warden policy --help`);
  }
  const selected = SELECTORS.filter((option) => values[option] !== undefined);
  if (sub === 'list' && (selected.length > 0 || values.server !== undefined)) {
    throw new WardenError('WARDEN_USAGE', `--${selected[0] ?? 'server'} applies to policy explain; policy list shows everything the agent may use`);
  }
  if (sub === 'explain') checkSelectors(selected, values.server, values['server-request']);

  // Loaded only now: usage errors and --help answer without compiling the config schema.
  const { loadConfig } = await import('../config/load.ts');
  const config = loadConfig(values.config, { state: 'read-only' });
  const agent = config.agents.get(values.agent);
  if (!agent) {
    throw new WardenError('WARDEN_AGENT_UNKNOWN', `agent "${printable(values.agent)}" is not in ${config.file}; agents: ${[...config.agents.keys()].join(', ') || 'none'}`);
  }
  const state = await readState(config);
  if (sub === 'list') {
    const listing = list(config, agent, state);
    process.stdout.write(values.json ? `${JSON.stringify(listing, null, 2)}\n` : formatListing(listing));
  } else if (values.tool !== undefined) {
    const explanation = explain(config, agent, values.tool, state);
    // The answer first, then the facts behind it.
    const { agent: name, tool, decision, reason, cause, refusal, otherwise, ...facts } = explanation;
    const json = { agent: name, tool, decision, reason, cause, refusal, otherwise, ...facts };
    process.stdout.write(values.json ? `${JSON.stringify(json, null, 2)}\n` : formatExplanation(explanation));
  } else {
    let explanation: SurfaceExplanation;
    if (values.prompt !== undefined) explanation = explainPrompt(config, agent, values.prompt, state);
    else if (values.resource !== undefined) explanation = explainResource(config, agent, values.resource, values.server, state);
    else explanation = explainServerRequest(config, agent, values['server-request'] as ServerRequestKind, values.server ?? '', state);
    const { agent: name, kind, prompt, resource, serverRequest, decision, reason, cause, refusal, otherwise, ...facts } = explanation;
    const json = { agent: name, kind, prompt, resource, serverRequest, decision, reason, cause, refusal, otherwise, ...facts };
    process.stdout.write(values.json ? `${JSON.stringify(json, null, 2)}\n` : formatSurfaceExplanation(explanation));
  }
  return 0;
}

/** Exactly one thing to explain, and --server where it belongs. */
function checkSelectors(selected: readonly (typeof SELECTORS)[number][], server: string | undefined, kind: string | undefined): void {
  if (selected.length !== 1) {
    const given = selected.length === 0 ? '' : ` (this has ${selected.map((option) => `--${option}`).join(' and ')})`;
    throw new WardenError('WARDEN_USAGE', `policy explain needs exactly one of --tool TOOL, --prompt PROMPT, --resource URI or --server-request KIND${given}; see mcp-warden policy --help`);
  }
  if (server !== undefined && (selected[0] === 'tool' || selected[0] === 'prompt')) {
    throw new WardenError('WARDEN_USAGE', `--server applies to --resource and --server-request; a ${selected[0]} name already says its server (<server>__<name>)`);
  }
  if (kind === undefined) return;
  if (!(SERVER_REQUEST_KINDS as readonly string[]).includes(kind)) {
    const roots = kind === 'roots' ? '; a server asking roots/list gets the roots under /servers/<key>/roots, for every agent' : '';
    throw new WardenError('WARDEN_USAGE', `--server-request is sampling or elicitation, not "${printable(kind)}"${roots}`);
  }
  if (server === undefined) throw new WardenError('WARDEN_USAGE', '--server-request needs --server SERVER, the server that would ask');
}

// ---------------------------------------------------------------------------------------
// Facts: what the broker would do, as data (the --json output), computed the way the
// call pipeline computes it (resolve, authorize, kill switch, limits, deduplicate, approve).

interface StateFacts {
  readonly killSwitch: KillSwitchRecord;
  /** Quarantined servers, by server key. */
  readonly quarantined: ReadonlyMap<string, QuarantineRecord>;
}

/** Read-only: a missing store reads as the switch off and nothing quarantined. */
async function readState(config: WardenConfig): Promise<StateFacts> {
  const { openStateStore } = await import('../state/store.ts');
  const store = openStateStore(config.state.dir, 'read-only');
  try {
    const quarantined = new Map<string, QuarantineRecord>();
    for (const [server, manifest] of config.servers) {
      const record = store.quarantined(manifest.name, manifest.digest);
      if (record) quarantined.set(server, record);
    }
    return { killSwitch: store.killSwitch.read(), quarantined };
  } finally {
    store.close();
  }
}

type Decision = 'allow' | 'deny' | 'needs-approval';
type DenyCause =
  | 'no-such-server'
  | 'server-refused'
  | 'no-such-tool'
  | 'no-such-prompt'
  | 'not-granted'
  | 'wrong-access'
  | 'kill-switch'
  | 'quarantined'
  // Resources and server requests:
  | 'uri-refused'
  | 'ambiguous'
  | 'other-server'
  | 'not-an-mcp-server'
  | 'unattributable';

interface GrantFacts {
  readonly path: string;
  readonly tools: readonly string[];
  readonly access: readonly string[];
  readonly approval: Grant['approval'];
  readonly fallback?: Grant['fallback'];
}

interface ApprovalFacts {
  /** out-of-band: mcp-warden approvals. user: the host asks its user. */
  readonly by: 'out-of-band' | 'user';
  /** For by user, when the host cannot ask. */
  readonly whenHostCannotAsk?: 'out-of-band' | 'refused';
  readonly holdSeconds: number;
  readonly expireSeconds: number;
}

interface LimitFacts {
  readonly perMinute: number | null;
  readonly burst: number | null;
  readonly concurrent: number | null;
  readonly source: string;
}

interface ToolLimits {
  readonly agent: LimitFacts;
  /** Counted across all agents together. */
  readonly tool: LimitFacts;
  readonly brokerConcurrent: { readonly concurrent: number; readonly source: string };
  readonly timeoutMs: number;
  readonly timeoutSource: string;
  readonly maxResultBytes: number;
  readonly maxResultBytesSource: string;
}

interface ToolFacts {
  readonly server: string;
  readonly manifest: string;
  readonly serial: number;
  readonly access: CatalogTool['tool']['access'];
  readonly idempotent: boolean;
  /** Repeats of the same write within the window get the first call's result. */
  readonly deduplicated: boolean;
  readonly deduplicationWindowSeconds: number | null;
}

interface Explanation {
  readonly config: string;
  readonly agent: string;
  readonly tool: string;
  readonly decision: Decision;
  /** One sentence: why. */
  readonly reason: string;
  readonly cause?: DenyCause;
  /** What the agent is answered when the call is refused. */
  readonly refusal?: WardenErrorCode;
  /** The decision the kill switch or a quarantine overrides. */
  readonly otherwise?: Decision;
  readonly approval?: ApprovalFacts;
  readonly server?: { readonly key: string; readonly status: 'accepted' | 'refused' | 'unknown'; readonly reason?: string; readonly message?: string; readonly file?: string };
  readonly toolInfo?: ToolFacts;
  readonly grant?: GrantFacts;
  readonly alsoMatching: readonly GrantFacts[];
  /** Grants whose patterns match the name but which do not cover its access class. */
  readonly matchNameOnly: readonly GrantFacts[];
  readonly killSwitch: { readonly state: KillSwitchRecord['state']; readonly changedAt: string | null; readonly changedBy: string | null };
  readonly quarantine?: { readonly reason: string; readonly since: string };
  readonly limits?: ToolLimits;
  /** Native HTTP tools: the request each call makes, placeholders as {name}. */
  readonly request?: { readonly method: string; readonly url: string };
  /** Native HTTP tools and Streamable HTTP servers' tools: what the egress rules say of their requests. */
  readonly egress?: EgressFacts;
  /** Code tools and code mode: where the code comes from and the limits it runs under. */
  readonly sandbox?: SandboxFacts;
}

interface SandboxFacts {
  readonly kind: 'code-tool' | 'code-mode';
  /** Code tools: the module the signed manifest pins. */
  readonly module?: { readonly path: string; readonly sha256: string };
  readonly limits: SandboxLimitSettings;
  /** Code mode: the caps on the tool calls one run makes. */
  readonly calls?: { readonly max: number; readonly concurrency: number };
}

interface EgressFacts {
  readonly method: string;
  /**
   * What was checked, as config load checks it: a native HTTP tool's URL up to its first
   * placeholder (what every call starts with), or a Streamable HTTP server's URL.
   */
  readonly url: string;
  readonly verdict: 'allow' | 'deny';
  readonly reason: EgressReason | null;
  readonly message: string;
  /** The rule that allows it. */
  readonly rule: { readonly path: string; readonly destination: string } | null;
  readonly unmatched: Unmatched | null;
}

function explain(config: WardenConfig, agent: AgentPolicy, name: string, state: StateFacts): Explanation {
  const base = { config: config.file, agent: agent.name, tool: name, killSwitch: killSwitchFacts(state.killSwitch) };
  const tool = config.catalog.get(name);
  if (!tool) return { ...base, ...unknownName(config, name, 'tool'), refusal: 'WARDEN_TOOL_NOT_FOUND', alsoMatching: [], matchNameOnly: [] };

  const toolInfo = factsOf(config, tool);
  const limits = limitsOf(config, agent, tool);
  const server = { key: tool.server, status: 'accepted' as const };
  const access = tool.tool.access;
  const decider = findGrant(agent.grants, name, access);
  const nameOnly = agent.grants.filter((grant) => !grant.access.has(access) && grant.matchers.some((matches) => matches(name)));
  const common = { ...base, server, toolInfo, limits, ...outboundOf(config, tool), ...sandboxOf(config, tool), matchNameOnly: nameOnly.map((grant) => grantFacts(agent, grant)) };
  if (!decider) {
    if (nameOnly.length > 0) {
      const fixes = nameOnly.map((grant) => `grant ${grantPath(agent, grant)} covers [${[...grant.access].join(', ')}]; add ${access} to its access`).join('; ');
      return { ...common, decision: 'deny', cause: 'wrong-access', refusal: 'WARDEN_TOOL_NOT_FOUND', reason: `${name} is a ${access} tool and no grant of agent "${agent.name}" covers ${access}: ${fixes}`, alsoMatching: [] };
    }
    return {
      ...common,
      decision: 'deny',
      cause: 'not-granted',
      refusal: 'WARDEN_TOOL_NOT_FOUND',
      reason: `no grant of agent "${agent.name}" matches ${name}; add a grant to /agents/${agent.name}/allow with tools [${name}]${access === 'read' ? '' : ` and access [${access}]`}`,
      alsoMatching: [],
    };
  }
  const grant = grantFacts(agent, decider);
  const alsoMatching = matchingGrants(agent.grants, name, access).filter((other) => other !== decider).map((other) => grantFacts(agent, other));
  const granted = { ...common, grant, alsoMatching };
  const approval = approvalFacts(config, decider);
  const otherwise: Decision = approval ? 'needs-approval' : 'allow';

  // In the pipeline's order: authorize, then the kill switch, then (at dispatch) quarantine.
  const switchState = state.killSwitch.state;
  if (switchState === 'on') {
    return { ...granted, decision: 'deny', cause: 'kill-switch', refusal: 'WARDEN_KILL_SWITCH', otherwise, reason: `the kill switch is on${changedBy(state.killSwitch)}: every call is refused and every tool list is empty until it is turned off` };
  }
  if (switchState === 'readonly' && access !== 'read') {
    return { ...granted, decision: 'deny', cause: 'kill-switch', refusal: 'WARDEN_READ_ONLY_MODE', otherwise, reason: `the kill switch is readonly${changedBy(state.killSwitch)}: only read tools may be called, and ${name} is a ${access} tool` };
  }
  const quarantine = state.quarantined.get(tool.server);
  if (quarantine) {
    return {
      ...granted,
      decision: 'deny',
      cause: 'quarantined',
      refusal: 'WARDEN_SERVER_QUARANTINED',
      otherwise,
      quarantine: { reason: quarantine.reason, since: quarantine.since },
      reason: `server "${tool.server}" (${toolInfo.manifest} serial ${toolInfo.serial}) is quarantined since ${quarantine.since} (${quarantine.reason}); its tools are withdrawn until the publisher signs a release with a higher serial`,
    };
  }
  if (!approval) return { ...granted, decision: 'allow', reason: `grant ${grant.path} covers ${name} (${access}) without approval` };
  return { ...granted, decision: 'needs-approval', approval, reason: `grant ${grant.path} covers ${name} (${access}) and asks for approval` };
}

/** A denial and why, before the facts around it. */
interface Denial {
  readonly decision: 'deny';
  readonly reason: string;
  readonly server?: Explanation['server'];
}

/** Why an exposed tool or prompt name is not in its catalog. The part before "__" is the server key. */
function unknownName(config: WardenConfig, name: string, kind: 'tool' | 'prompt'): Denial & { readonly cause: 'no-such-server' | 'server-refused' | 'no-such-tool' | 'no-such-prompt' } {
  const separator = name.indexOf(SEPARATOR);
  const shown = printable(name);
  const cause = kind === 'tool' ? 'no-such-tool' : 'no-such-prompt';
  if (separator <= 0) {
    const example = (kind === 'tool' ? config.catalog : config.prompts).keys().next().value ?? `notes${SEPARATOR}list_notes`;
    return { decision: 'deny', cause, reason: `"${shown}" is not an exposed ${kind} name: they are <server>__<${kind}>, like ${example}` };
  }
  const key = name.slice(0, separator);
  const ownName = name.slice(separator + SEPARATOR.length);
  if (kind === 'tool' && key === CODE_MODE_SERVER) {
    const reason = name === RUN_CODE
      ? `code mode (${RUN_CODE}) exists only when a grant names it exactly, and none does; add a grant with tools [${RUN_CODE}] (a wildcard never covers it; docs/sandbox.md)`
      : `the broker's own tools are ${RUN_CODE} only`;
    return { decision: 'deny', cause, reason };
  }
  const missing = missingServer(config, key, `none of its ${kind}s exist until it is accepted`);
  if (missing) return missing;
  const manifest = config.servers.get(key)!;
  const names = (kind === 'tool' ? manifest.tools : manifest.prompts).map((entry) => `${key}${SEPARATOR}${entry.name}`);
  const shownNames = names.length > 12 ? `${names.slice(0, 12).join(', ')}, … (${names.length} in all)` : names.join(', ');
  return {
    decision: 'deny',
    cause,
    server: { key, status: 'accepted' },
    reason: `server "${key}" (${manifest.name} serial ${manifest.serial}) has no ${kind} "${printable(ownName)}" in its signed manifest; its ${kind}s: ${shownNames || 'none'}`,
  };
}

/** A server key that names no accepted server: refused (with the reason from the config load), or not there at all. */
function missingServer(config: WardenConfig, key: string, consequence: string): (Denial & { readonly cause: 'no-such-server' | 'server-refused' }) | undefined {
  if (config.servers.has(key)) return undefined;
  const refused = config.rejected.get(key);
  if (refused) {
    return {
      decision: 'deny',
      cause: 'server-refused',
      server: { key, status: 'refused', reason: refused.reason, message: refused.message, file: refused.file },
      reason: `the manifest of server "${key}" was refused [${refused.reason}]: ${refused.message} (${refused.file}); ${consequence} (mcp-warden config check)`,
    };
  }
  const servers = [...config.servers.keys(), ...config.rejected.keys()].sort();
  return {
    decision: 'deny',
    cause: 'no-such-server',
    server: { key: printable(key), status: 'unknown' },
    reason: `there is no server "${printable(key)}" in ${config.file} (or it is disabled); servers: ${servers.join(', ') || 'none'}`,
  };
}

function factsOf(config: WardenConfig, tool: CatalogTool): ToolFacts {
  const manifest = config.servers.get(tool.server);
  const deduplicated = tool.tool.access !== 'read' && tool.tool.idempotent !== true;
  return {
    server: tool.server,
    manifest: manifest?.name ?? '',
    serial: manifest?.serial ?? 0,
    access: tool.tool.access,
    idempotent: tool.tool.idempotent === true,
    deduplicated,
    deduplicationWindowSeconds: deduplicated ? config.idempotency.windowMs / 1000 : null,
  };
}

/** Where a code tool's code comes from and the limits its calls run under (at the call timeout the policy allows). */
function sandboxOf(config: WardenConfig, tool: CatalogTool): Pick<Explanation, 'sandbox'> {
  const { sandbox } = config;
  const timeoutMs = Math.min(tool.tool.timeoutMs ?? config.limits.callTimeoutMs, config.limits.maxCallTimeoutMs);
  if (tool.server === CODE_MODE_SERVER) {
    return { sandbox: { kind: 'code-mode', limits: runLimits(sandbox.limits, sandbox.limits, undefined, timeoutMs), calls: { max: sandbox.codeMode.maxCalls, concurrency: sandbox.codeMode.concurrency } } };
  }
  const transport = config.servers.get(tool.server)?.transport;
  if (transport?.type !== 'sandbox') return {};
  return { sandbox: { kind: 'code-tool', module: { path: transport.module, sha256: transport.sha256 }, limits: runLimits(sandbox.limits, sandbox.maxLimits, tool.tool.sandbox, timeoutMs) } };
}

/** The request a tool's calls make, for tools the broker sends over HTTP itself, and the egress verdict for it. */
function outboundOf(config: WardenConfig, tool: CatalogTool): Pick<Explanation, 'request' | 'egress'> {
  const transport = config.servers.get(tool.server)?.transport;
  if (transport?.type === 'http') return { egress: egressFacts(config, new URL(transport.url), 'POST') };
  const http = tool.tool.http;
  if (transport?.type !== 'http-api' || !http) return {};
  // The path up to its first placeholder, as config load checks it for its warnings.
  const fixed = http.path.split('{')[0]!;
  return { request: { method: http.method, url: `${transport.baseUrl}${http.path}` }, egress: egressFacts(config, new URL(`${transport.baseUrl}${fixed}`), http.method) };
}

function egressFacts(config: WardenConfig, url: URL, method: string): EgressFacts {
  const facts = requestFacts(config.egress, url, method);
  const rule = facts.rule ? { path: facts.rule.path, destination: facts.rule.destination } : null;
  const message = facts.refusal?.message ?? `rule ${rule?.path} (${rule?.destination}) allows ${method} ${url.pathname} on ${url.origin}`;
  return { method, url: url.href, verdict: facts.allowed ? 'allow' : 'deny', reason: facts.refusal?.reason ?? null, message, rule, unmatched: facts.unmatched };
}

function approvalFacts(config: WardenConfig, grant: Grant): ApprovalFacts | undefined {
  if (grant.approval === 'none') return undefined;
  const timing = { holdSeconds: config.approvals.waitMs / 1000, expireSeconds: config.approvals.expireMs / 1000 };
  if (grant.approval === 'required') return { by: 'out-of-band', ...timing };
  return { by: 'user', whenHostCannotAsk: grant.fallback === 'required' ? 'out-of-band' : 'refused', ...timing };
}

function grantPath(agent: AgentPolicy, grant: { readonly index: number }): string {
  return `/agents/${agent.name}/allow/${grant.index}`;
}

function grantFacts(agent: AgentPolicy, grant: Grant): GrantFacts {
  return {
    path: grantPath(agent, grant),
    tools: grant.patterns,
    access: [...grant.access],
    approval: grant.approval,
    ...(grant.approval === 'user' ? { fallback: grant.fallback } : {}),
  };
}

function killSwitchFacts(record: KillSwitchRecord): Explanation['killSwitch'] {
  return {
    state: record.state,
    changedAt: record.changedAt > 0 ? new Date(record.changedAt).toISOString() : null,
    changedBy: record.changedBy === '' ? null : record.changedBy,
  };
}

function changedBy(record: KillSwitchRecord): string {
  if (record.changedAt <= 0) return '';
  return ` (set by ${printable(record.changedBy)} at ${new Date(record.changedAt).toISOString()})`;
}

/** The limits the rate-limit and dispatch stages apply to this agent's calls to this tool. */
function limitsOf(config: WardenConfig, agent: AgentPolicy, tool: CatalogTool): ToolLimits {
  const own = JSON.stringify(normalized(agent.rateLimit)) !== JSON.stringify(normalized(config.rateLimits.perAgent));
  const override = config.rateLimits.tools.find((entry) => entry.matchers.some((matches) => matches(tool.exposedName)));
  const { timeoutMs, maxResultBytes } = tool.tool;
  let timeoutSource = '/limits/callTimeoutMs';
  if (tool.server === CODE_MODE_SERVER) timeoutSource = timeoutMs !== undefined && timeoutMs > config.limits.maxCallTimeoutMs ? '/limits/maxCallTimeoutMs (caps /sandbox/limits/wallMs)' : '/sandbox/limits/wallMs';
  else if (timeoutMs !== undefined) timeoutSource = timeoutMs > config.limits.maxCallTimeoutMs ? `/limits/maxCallTimeoutMs (caps the manifest's timeoutMs ${timeoutMs})` : `the manifest's timeoutMs`;
  const resultFromManifest = maxResultBytes !== undefined && maxResultBytes < config.limits.maxResultBytes;
  return {
    agent: limitFacts(agent.rateLimit, own ? `/agents/${agent.name}/rateLimit over /rateLimits/perAgent` : '/rateLimits/perAgent'),
    tool: limitFacts(override?.limit ?? config.rateLimits.perTool, override ? `/rateLimits/tools/${override.index}: tools [${override.patterns.join(', ')}]` : '/rateLimits/perTool'),
    brokerConcurrent: { concurrent: config.rateLimits.concurrent, source: '/rateLimits/concurrent' },
    timeoutMs: Math.min(timeoutMs ?? config.limits.callTimeoutMs, config.limits.maxCallTimeoutMs),
    timeoutSource,
    maxResultBytes: resultFromManifest ? maxResultBytes : config.limits.maxResultBytes,
    maxResultBytesSource: resultFromManifest ? "the manifest's maxResultBytes" : '/limits/maxResultBytes',
  };
}

function normalized(limit: RateLimit): [number | null, number | null, number | null] {
  return [limit.perMinute ?? null, limit.burst ?? null, limit.concurrent ?? null];
}

function limitFacts(limit: RateLimit, source: string): LimitFacts {
  // Without a burst, a full minute's allowance may be spent at once (admitCall).
  return { perMinute: limit.perMinute ?? null, burst: limit.perMinute === undefined ? null : (limit.burst ?? limit.perMinute), concurrent: limit.concurrent ?? null, source };
}

interface Listing {
  readonly config: string;
  readonly agent: string;
  readonly killSwitch: Explanation['killSwitch'];
  readonly agentLimit: LimitFacts;
  readonly tools: readonly {
    readonly name: string;
    readonly server: string;
    readonly access: CatalogTool['tool']['access'];
    readonly grant: string;
    readonly approval: Grant['approval'];
    readonly fallback?: Grant['fallback'];
    readonly deduplicated: boolean;
    readonly deduplicationWindowSeconds: number | null;
    readonly limit: LimitFacts;
    readonly timeoutMs: number;
    readonly maxResultBytes: number;
    readonly quarantined: boolean;
  }[];
  /** What prompts/list shows, sorted by name. */
  readonly prompts: readonly { readonly name: string; readonly server: string; readonly grant: string; readonly quarantined: boolean }[];
  /** The resource grants that apply, by server: what resources/list is filtered by and resources/read decided by. */
  readonly resources: readonly { readonly grant: string; readonly server: string; readonly patterns: readonly string[]; readonly serverState: Standing }[];
  readonly serverRequests: {
    readonly allowed: readonly { readonly server: string; readonly kind: ServerRequestKind; readonly grant: string; readonly serverState: Standing; readonly unattributable: boolean }[];
    /** Every other server and kind. */
    readonly otherwise: 'deny';
  };
}

/** What tools/list shows this agent with the kill switch off: the tools a grant covers (broker.ts visibleTools). */
function list(config: WardenConfig, agent: AgentPolicy, state: StateFacts): Listing {
  const tools = [...config.catalog.values()]
    .flatMap((tool) => {
      const grant = findGrant(agent.grants, tool.exposedName, tool.tool.access);
      if (!grant) return [];
      const facts = factsOf(config, tool);
      const limits = limitsOf(config, agent, tool);
      return [{
        name: tool.exposedName,
        server: tool.server,
        access: tool.tool.access,
        grant: grantPath(agent, grant),
        approval: grant.approval,
        ...(grant.approval === 'user' ? { fallback: grant.fallback } : {}),
        deduplicated: facts.deduplicated,
        deduplicationWindowSeconds: facts.deduplicationWindowSeconds,
        limit: limits.tool,
        timeoutMs: limits.timeoutMs,
        maxResultBytes: limits.maxResultBytes,
        quarantined: state.quarantined.has(tool.server),
      }];
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const agentLimit = limitFacts(agent.rateLimit, JSON.stringify(normalized(agent.rateLimit)) === JSON.stringify(normalized(config.rateLimits.perAgent)) ? '/rateLimits/perAgent' : `/agents/${agent.name}/rateLimit over /rateLimits/perAgent`);
  return { config: config.file, agent: agent.name, killSwitch: killSwitchFacts(state.killSwitch), agentLimit, tools, ...listSurface(config, agent, state) };
}

// ---------------------------------------------------------------------------------------
// Prompts, resources and requests from servers, decided by the functions the broker's own
// paths call (src/surface/*, src/policy/surface-grants.ts). Unlike a tool call, each
// checks the kill switch first: on, it refuses the request whatever the grants say.

/** This command answers for a session without an OAuth access token: grants that name scopes do not count. */
const NO_TOKEN: SessionScopes = undefined;

interface SurfaceGrantFacts {
  readonly path: string;
  readonly server?: string;
  readonly prompts?: readonly string[];
  readonly resources?: readonly string[];
  readonly serverRequests?: readonly ServerRequestKind[];
}

type ServerFacts = NonNullable<Explanation['server']> & { readonly manifest?: string; readonly serial?: number; readonly transport?: string };

interface SurfaceExplanation {
  readonly config: string;
  readonly agent: string;
  readonly kind: 'prompt' | 'resource' | 'server-request';
  readonly prompt?: string;
  readonly resource?: string;
  readonly serverRequest?: ServerRequestKind;
  readonly decision: 'allow' | 'deny';
  readonly reason: string;
  readonly cause?: DenyCause;
  /** What the agent is answered; for a server request, what the server is answered (the host sees nothing). */
  readonly refusal?: WardenErrorCode;
  /** The decision the kill switch or a quarantine overrides. */
  readonly otherwise?: 'allow' | 'deny';
  readonly server?: ServerFacts;
  readonly grant?: SurfaceGrantFacts;
  readonly alsoMatching: readonly SurfaceGrantFacts[];
  /** Resources: the servers whose grants cover the URI (more than one: ambiguous). */
  readonly grantedOn?: readonly string[];
  /** Prompts: the arguments the signed definition declares. */
  readonly arguments?: readonly { readonly name: string; readonly required: boolean }[];
  /** Server requests: the terms a request is relayed on. */
  readonly terms?: ServerRequestTerms;
  readonly killSwitch: Explanation['killSwitch'];
  readonly quarantine?: { readonly reason: string; readonly since: string };
}

interface ServerRequestTerms {
  /** The server's tools this agent may call: its requests come only during those calls. */
  readonly callableTools: number;
  readonly maxBytes: number;
  readonly answerTimeoutMs: number;
  /** A stdio server that may speak the 2025 era: nothing ties its request to a call, so it is relayed only while one agent alone reaches the server (broker.ts soleAgent). */
  readonly attribution?: { readonly agentsReaching: readonly string[]; readonly sole: boolean };
}

/** prompts/get: a prompt of an accepted manifest that a prompt grant covers, of a server not quarantined (surface/prompts.ts visiblePrompts). */
function explainPrompt(config: WardenConfig, agent: AgentPolicy, name: string, state: StateFacts): SurfaceExplanation {
  const base = { config: config.file, agent: agent.name, kind: 'prompt' as const, prompt: name, killSwitch: killSwitchFacts(state.killSwitch), alsoMatching: [] };
  return underKillSwitch(state, 'WARDEN_KILL_SWITCH', () => {
    const prompt = config.prompts.get(name);
    if (!prompt) return { ...base, ...unknownName(config, name, 'prompt'), refusal: 'WARDEN_PROMPT_NOT_FOUND' };
    const common = { ...base, server: serverFacts(config, prompt.server), arguments: (prompt.prompt.arguments ?? []).map((argument) => ({ name: argument.name, required: argument.required === true })) };
    const [decider, ...others] = matchingPromptGrants(agent.promptGrants, name, NO_TOKEN);
    if (!decider) {
      return { ...common, decision: 'deny', cause: 'not-granted', refusal: 'WARDEN_PROMPT_NOT_FOUND', reason: `no prompt grant of agent "${agent.name}" matches ${name}; add a grant to /agents/${agent.name}/allow with prompts [${name}]` };
    }
    const granted = { ...common, grant: surfaceGrantFacts(agent, decider), alsoMatching: others.map((grant) => surfaceGrantFacts(agent, grant)) };
    const quarantined = quarantineFacts(config, state, prompt.server, 'its prompts are withdrawn');
    if (quarantined) return { ...granted, ...quarantined, refusal: 'WARDEN_PROMPT_NOT_FOUND' };
    return { ...granted, decision: 'allow', reason: `grant ${granted.grant.path} covers ${name}` };
  });
}

/**
 * resources/read and resources/subscribe: the URI checked and its one server chosen by
 * resourceServer, the function the broker reads with; then that server must be an MCP
 * server the broker runs, not quarantined.
 */
function explainResource(config: WardenConfig, agent: AgentPolicy, uri: string, asked: string | undefined, state: StateFacts): SurfaceExplanation {
  const base = { config: config.file, agent: agent.name, kind: 'resource' as const, resource: uri, killSwitch: killSwitchFacts(state.killSwitch), alsoMatching: [] };
  return underKillSwitch(state, 'WARDEN_KILL_SWITCH', () => {
    let server: string;
    try {
      server = resourceServer(agent.resourceGrants, uri, NO_TOKEN).server;
    } catch (error) {
      if (!isWardenError(error)) throw error;
      return { ...base, ...resourceRefusal(config, agent, uri, asked, error.code) };
    }
    // resourceServer let exactly one server's grants cover the URI: these are all that server's.
    const [decider, ...others] = matchingResourceGrants(agent.resourceGrants, uri, NO_TOKEN);
    const grant = surfaceGrantFacts(agent, decider!);
    const granted = { ...base, server: serverFacts(config, server), grantedOn: [server], grant, alsoMatching: others.map((other) => surfaceGrantFacts(agent, other)) };
    if (asked !== undefined && asked !== server) {
      return { ...granted, decision: 'deny', cause: 'other-server', reason: `a read of this URI goes to server "${server}" (grant ${grant.path}), never to "${printable(asked)}": the agent names only the URI, and the broker reads it from the one server whose grants cover it` };
    }
    const missing = missingServer(config, server, 'it has no resources until it is accepted');
    if (missing) return { ...granted, ...missing, refusal: 'WARDEN_RESOURCE_NOT_FOUND', reason: `grant ${grant.path} names server "${server}", but ${missing.reason}` };
    if (!isMcpServer(config, server)) {
      return { ...granted, decision: 'deny', cause: 'not-an-mcp-server', refusal: 'WARDEN_RESOURCE_NOT_FOUND', reason: `grant ${grant.path} names server "${server}", which is not an MCP server and has no resources` };
    }
    const quarantined = quarantineFacts(config, state, server, 'nothing is read from it');
    if (quarantined) return { ...granted, ...quarantined, refusal: 'WARDEN_SERVER_QUARANTINED' };
    return { ...granted, decision: 'allow', reason: `grant ${grant.path} covers the URI on server "${server}", and no other server's grants cover it` };
  });
}

/** Why resourceServer refused the URI, in the words of its refusal code. */
function resourceRefusal(config: WardenConfig, agent: AgentPolicy, uri: string, asked: string | undefined, code: WardenErrorCode): Pick<SurfaceExplanation, 'decision' | 'reason'> & Partial<SurfaceExplanation> {
  if (code === 'WARDEN_RESOURCE_URI_INVALID') {
    return { decision: 'deny', cause: 'uri-refused', refusal: code, reason: `the broker refuses this URI before any grant is tried: ${resourceUriProblem(uri)}` };
  }
  if (code === 'WARDEN_RESOURCE_AMBIGUOUS') {
    const grants = matchingResourceGrants(agent.resourceGrants, uri, NO_TOKEN);
    const by = grants.map((grant) => `${grant.server} by ${grantPath(agent, grant)}`).join(', ');
    return {
      decision: 'deny',
      cause: 'ambiguous',
      refusal: code,
      grantedOn: serversAllowing(agent.resourceGrants, uri, NO_TOKEN),
      alsoMatching: grants.map((grant) => surfaceGrantFacts(agent, grant)),
      reason: `the URI is granted on more than one server (${by}); the broker does not guess which to read, so it reads it from none: narrow the patterns until one server's grants cover it`,
    };
  }
  const missing = asked === undefined ? undefined : missingServer(config, asked, 'it has no resources until it is accepted');
  if (missing) return { ...missing, refusal: code };
  return {
    decision: 'deny',
    cause: 'not-granted',
    refusal: code,
    reason: `no resource grant of agent "${agent.name}" covers ${printable(uri)}; add a grant to /agents/${agent.name}/allow with server: ${asked === undefined ? 'SERVER' : printable(asked)} and a resources pattern that matches it`,
  };
}

/**
 * sampling/createMessage or elicitation/create from a server during one of the agent's
 * tool calls to it: allowed by serverRequestAllowed's grants (surface/server-requests.ts),
 * refused while the kill switch is on, and never relayed when it cannot be tied to the call.
 */
function explainServerRequest(config: WardenConfig, agent: AgentPolicy, kind: ServerRequestKind, key: string, state: StateFacts): SurfaceExplanation {
  const base = { config: config.file, agent: agent.name, kind: 'server-request' as const, serverRequest: kind, killSwitch: killSwitchFacts(state.killSwitch), alsoMatching: [] };
  return underKillSwitch(state, 'WARDEN_SERVER_REQUEST_DENIED', () => {
    const missing = missingServer(config, key, 'it is not started, so it asks nothing');
    if (missing) return { ...base, ...missing };
    const server = serverFacts(config, key);
    if (!isMcpServer(config, key)) return { ...base, server, decision: 'deny', cause: 'not-an-mcp-server', reason: `server "${key}" is not an MCP server: the broker makes its requests itself, and it never asks the host anything` };
    const terms = requestTerms(config, agent, key);
    const common = { ...base, server, terms };
    const [decider, ...others] = matchingServerRequestGrants(agent.serverRequestGrants, key, kind, NO_TOKEN);
    if (!decider) {
      const otherKind = SERVER_REQUEST_KINDS.find((other) => other !== kind)!;
      const [partial] = matchingServerRequestGrants(agent.serverRequestGrants, key, otherKind, NO_TOKEN);
      const fix = partial ? `grant ${grantPath(agent, partial)} lets it ask for ${otherKind} only; add ${kind} to its serverRequests` : `add a grant to /agents/${agent.name}/allow with serverRequests [${kind}] and server: ${key}`;
      return { ...common, decision: 'deny', cause: 'not-granted', refusal: 'WARDEN_SERVER_REQUEST_DENIED', reason: `no grant lets server "${key}" ask agent "${agent.name}"'s host for ${kind} (default deny); ${fix}` };
    }
    const grant = surfaceGrantFacts(agent, decider);
    const granted = { ...common, grant, alsoMatching: others.map((other) => surfaceGrantFacts(agent, other)) };
    const quarantined = quarantineFacts(config, state, key, 'its tools are withdrawn, so no call reaches it to ask during');
    if (quarantined) return { ...granted, ...quarantined };
    if (terms.attribution?.sole === false) {
      const why = 'over a 2025-era stdio connection nothing ties a request to a call, so the broker relays one only while a single agent\'s grants reach the server (a server pinned to era: modern, or one with era: auto that negotiates 2026-07-28, is not limited so)';
      return { ...granted, decision: 'deny', cause: 'unattributable', refusal: 'WARDEN_SERVER_REQUEST_DENIED', reason: `grant ${grant.path} allows it, but ${why}: ${unattributable(key, terms.attribution.agentsReaching)}` };
    }
    return { ...granted, decision: 'allow', reason: `grant ${grant.path} lets server "${key}" ask agent "${agent.name}"'s host for ${kind} during the agent's tool calls to it` };
  });
}

function unattributable(key: string, agents: readonly string[]): string {
  return `${agents.join(', ')} reach "${key}", so each request is refused (unattributable); give each agent its own entry under /servers`;
}

function requestTerms(config: WardenConfig, agent: AgentPolicy, key: string): ServerRequestTerms {
  const transport = config.servers.get(key)?.transport;
  const callableTools = [...config.catalog.values()].filter((tool) => tool.server === key && findGrant(agent.grants, tool.exposedName, tool.tool.access, NO_TOKEN) !== undefined).length;
  const terms = { callableTools, maxBytes: config.limits.maxServerRequestBytes, answerTimeoutMs: config.limits.answerTimeoutMs };
  // A 2026-07-28 server's request arrives in the answer to the broker's own, which names its call.
  if (transport?.type !== 'stdio' || transport.era === 'modern') return terms;
  const reaching = agentsReaching(config, key);
  return { ...terms, attribution: { agentsReaching: reaching, sole: reaching.length === 1 } };
}

/** The kill switch on refuses the request before anything else is looked at (surface/judge.ts judged, relayServerRequest). */
function underKillSwitch(state: StateFacts, refusal: WardenErrorCode, decide: () => SurfaceExplanation): SurfaceExplanation {
  const facts = decide();
  if (state.killSwitch.state !== 'on') return facts;
  return { ...facts, decision: 'deny', cause: 'kill-switch', refusal, otherwise: facts.decision, reason: `the kill switch is on${changedBy(state.killSwitch)}: every request is refused until it is turned off; with it off: ${facts.reason}` };
}

/** A deny for a server quarantined in the state store, or undefined. */
function quarantineFacts(config: WardenConfig, state: StateFacts, key: string, consequence: string): Pick<SurfaceExplanation, 'decision' | 'cause' | 'otherwise' | 'quarantine' | 'reason'> | undefined {
  const record = state.quarantined.get(key);
  const manifest = config.servers.get(key);
  if (!record || !manifest) return undefined;
  return {
    decision: 'deny',
    cause: 'quarantined',
    otherwise: 'allow',
    quarantine: { reason: record.reason, since: record.since },
    reason: `server "${key}" (${manifest.name} serial ${manifest.serial}) is quarantined since ${record.since} (${record.reason}); ${consequence} until the publisher signs a release with a higher serial`,
  };
}

function serverFacts(config: WardenConfig, key: string): ServerFacts {
  const manifest = config.servers.get(key);
  if (!manifest) return { key: printable(key), status: 'unknown' };
  return { key, status: 'accepted', manifest: manifest.name, serial: manifest.serial, transport: manifest.transport.type };
}

/** Only MCP servers (stdio, Streamable HTTP) have prompts and resources and ask the host things; the broker runs the others' tools itself. */
function isMcpServer(config: WardenConfig, key: string): boolean {
  const type = config.servers.get(key)?.transport.type;
  return type === 'stdio' || type === 'http';
}

function surfaceGrantFacts(agent: AgentPolicy, grant: PromptGrant | ResourceGrant | ServerRequestGrant): SurfaceGrantFacts {
  const path = grantPath(agent, grant);
  if ('kinds' in grant) return { path, server: grant.server, serverRequests: [...grant.kinds] };
  if ('server' in grant) return { path, server: grant.server, resources: grant.patterns };
  return { path, prompts: grant.patterns };
}

/** Where a server stands for the surface paths. */
type Standing = 'ok' | 'quarantined' | 'not-an-mcp-server' | 'refused' | 'absent';

function standingOf(config: WardenConfig, state: StateFacts, key: string): Standing {
  if (!config.servers.has(key)) return config.rejected.has(key) ? 'refused' : 'absent';
  if (!isMcpServer(config, key)) return 'not-an-mcp-server';
  return state.quarantined.has(key) ? 'quarantined' : 'ok';
}

/** The prompts, resource grants and server requests of an agent, with the kill switch off. */
function listSurface(config: WardenConfig, agent: AgentPolicy, state: StateFacts): Pick<Listing, 'prompts' | 'resources' | 'serverRequests'> {
  const prompts = [...config.prompts.values()]
    .flatMap((prompt) => {
      const [grant] = matchingPromptGrants(agent.promptGrants, prompt.exposedName, NO_TOKEN);
      return grant ? [{ name: prompt.exposedName, server: prompt.server, grant: grantPath(agent, grant), quarantined: state.quarantined.has(prompt.server) }] : [];
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const resourceServers = new Set(agent.resourceGrants.map((grant) => grant.server));
  const resources = [...resourceServers].flatMap((server) =>
    resourceGrantsFor(agent.resourceGrants, server, NO_TOKEN).map((grant) => ({ grant: grantPath(agent, grant), server, patterns: grant.patterns, serverState: standingOf(config, state, server) })),
  );
  const requestServers = new Set(agent.serverRequestGrants.map((grant) => grant.server));
  const allowed = [...requestServers].flatMap((server) =>
    SERVER_REQUEST_KINDS.flatMap((kind) => {
      const [grant] = matchingServerRequestGrants(agent.serverRequestGrants, server, kind, NO_TOKEN);
      if (!grant) return [];
      const attribution = requestTerms(config, agent, server).attribution;
      return [{ server, kind, grant: grantPath(agent, grant), serverState: standingOf(config, state, server), unattributable: attribution?.sole === false }];
    }),
  );
  return { prompts, resources, serverRequests: { allowed, otherwise: 'deny' } };
}

// ---------------------------------------------------------------------------------------
// Text for people.

function formatExplanation(facts: Explanation): string {
  const lines: string[] = [`agent "${printable(facts.agent)}", tool "${printable(facts.tool)}"`];
  lines.push(`decision: ${decisionText(facts)}`);
  lines.push(`  why: ${printable(facts.reason)}`);
  if (facts.approval) lines.push(...approvalLines(facts.approval).map((line) => `  ${line}`));
  if (facts.otherwise) lines.push(`  with the ${facts.cause === 'kill-switch' ? 'kill switch off' : 'quarantine lifted'}, the decision would be: ${facts.otherwise === 'needs-approval' ? 'needs approval' : facts.otherwise}`);
  if (facts.refusal) {
    const same = facts.refusal === 'WARDEN_TOOL_NOT_FOUND' ? ', the same answer as for a tool that does not exist, so agents cannot probe for tools' : '';
    lines.push(`  the agent is answered ${facts.refusal}${same}`);
  }
  if (facts.toolInfo) {
    const tool = facts.toolInfo;
    const origin = tool.server === CODE_MODE_SERVER ? "the broker's own (code mode)" : `server ${tool.server} (${tool.manifest} serial ${tool.serial})`;
    lines.push(`tool: ${origin}, access ${tool.access}${tool.idempotent ? ', signed idempotent' : ''}`);
    lines.push(
      tool.deduplicated
        ? `  writes are deduplicated: repeats within ${tool.deduplicationWindowSeconds} s get the first result; the tool runs once`
        : `  not deduplicated: ${tool.access === 'read' ? 'a read tool' : 'its manifest signs it idempotent'}, each call runs`,
    );
  }
  if (facts.egress) lines.push(...egressLines(facts));
  if (facts.sandbox) lines.push(...sandboxLines(facts.sandbox));
  if (facts.grant) lines.push(`decided by: ${grantText(facts.grant)}${facts.alsoMatching.length > 0 ? ' (the strictest approval among the matching grants wins; among equals, the first)' : ''}`);
  for (const other of facts.alsoMatching) lines.push(`also matches: ${grantText(other)}`);
  for (const other of facts.matchNameOnly) lines.push(`matches the name only: ${grantText(other)}`);
  const ks = facts.killSwitch;
  lines.push(`kill switch: ${ks.state}${ks.changedAt ? ` (set by ${printable(ks.changedBy ?? '')} at ${ks.changedAt})` : ''}${ks.state === 'readonly' ? '; only read tools may be called' : ks.state === 'on' ? '; every call is refused' : ''}`);
  if (facts.limits) lines.push('limits:', ...limitLines(facts.limits).map((line) => `  ${line}`));
  return `${lines.join('\n')}\n`;
}

function egressLines(facts: Explanation): string[] {
  const egress = facts.egress!;
  const lines = [facts.request ? `request: ${facts.request.method} ${printable(facts.request.url)}` : `server URL: ${egress.method} ${printable(egress.url)} (Streamable HTTP)`];
  const checked = `${egress.method} ${printable(egress.url)}`;
  if (egress.verdict === 'allow') {
    const host = hostOf(new URL(egress.url).hostname);
    const addresses = canonicalAddress(host) === undefined ? `; the addresses of ${host} are checked when the broker connects (mcp-warden egress check --resolve)` : '';
    lines.push(`  egress: allowed by ${egress.rule?.path} (${printable(egress.rule?.destination ?? '')}), checked for ${checked}${addresses}`);
  } else {
    lines.push(`  egress: deny [${egress.reason}]: ${printable(egress.message)}, checked for ${checked}; ${facts.request ? 'every call of this tool is refused' : 'the broker cannot connect to this server'} (WARDEN_EGRESS_DENIED); add a rule to /egress/allow`);
  }
  return lines;
}

function sandboxLines(sandbox: SandboxFacts): string[] {
  const { memoryMb, cpuMs, wallMs, inputBytes, outputBytes } = sandbox.limits;
  const limits = `  sandbox limits: ${memoryMb} MB, ${cpuMs} ms of CPU, ${wallMs} ms in all, ${inputBytes} bytes in, ${outputBytes} bytes out (/sandbox, docs/sandbox.md)`;
  if (sandbox.kind === 'code-mode') {
    return [`code mode: the agent's code runs in a sandbox; each tool call it makes is judged like a direct call, up to ${sandbox.calls?.max} per run, ${sandbox.calls?.concurrency} at once`, limits];
  }
  return [`code tool: module ${printable(sandbox.module?.path ?? '')}, pinned sha256 ${sandbox.module?.sha256}`, limits];
}

function decisionText(facts: Explanation): string {
  if (facts.decision !== 'needs-approval' || !facts.approval) return facts.decision;
  if (facts.approval.by === 'out-of-band') return 'needs approval (out of band)';
  return `needs approval (by the user; if the host cannot ask: ${facts.approval.whenHostCannotAsk === 'out-of-band' ? 'falls back to out-of-band approval' : 'refused'})`;
}

function approvalLines(approval: ApprovalFacts): string[] {
  const outOfBand = `a person decides each call with "mcp-warden approvals approve|deny ID"; the call is held up to ${approval.holdSeconds} s, then the agent is told to call again with the same arguments; unanswered, the approval expires after ${approval.expireSeconds} s`;
  if (approval.by === 'out-of-band') return [outOfBand];
  return [
    'the MCP host asks its user in the conversation (elicitation) before each call; the answer binds this call\'s exact arguments',
    approval.whenHostCannotAsk === 'out-of-band'
      ? `a host that cannot ask falls back to out-of-band approval: ${outOfBand}`
      : 'a host that cannot ask gets the call refused (WARDEN_APPROVAL_UNAVAILABLE)',
  ];
}

function grantText(grant: GrantFacts): string {
  const fallback = grant.fallback === undefined ? '' : `, fallback ${grant.fallback}`;
  return `${grant.path}: tools [${grant.tools.join(', ')}], access [${grant.access.join(', ')}], approval ${grant.approval}${fallback}`;
}

function limitText(limit: LimitFacts): string {
  const rate = limit.perMinute === null ? 'no rate limit' : `${limit.perMinute} calls/min, burst ${limit.burst}`;
  const concurrent = limit.concurrent === null ? 'no concurrency limit' : `${limit.concurrent} at once`;
  return `${rate}, ${concurrent}`;
}

function limitLines(limits: ToolLimits): string[] {
  return [
    `agent:   ${limitText(limits.agent)} (${limits.agent.source})`,
    `tool:    ${limitText(limits.tool)}, all agents together (${limits.tool.source})`,
    `broker:  ${limits.brokerConcurrent.concurrent} calls at once, all agents together (${limits.brokerConcurrent.source})`,
    `timeout: ${limits.timeoutMs} ms (${limits.timeoutSource})`,
    `result:  at most ${limits.maxResultBytes} bytes of text (${limits.maxResultBytesSource})`,
  ];
}

function formatSurfaceExplanation(facts: SurfaceExplanation): string {
  const lines: string[] = [`agent "${printable(facts.agent)}", ${subjectText(facts)}`];
  lines.push(`decision: ${facts.decision}`);
  lines.push(`  why: ${printable(facts.reason)}`);
  if (facts.otherwise) lines.push(`  with the ${facts.cause === 'kill-switch' ? 'kill switch off' : 'quarantine lifted'}, the decision would be: ${facts.otherwise}`);
  if (facts.refusal) {
    const same = facts.refusal === 'WARDEN_PROMPT_NOT_FOUND' || facts.refusal === 'WARDEN_RESOURCE_NOT_FOUND' ? `, the same answer as for a ${facts.kind} that does not exist` : '';
    lines.push(facts.kind === 'server-request' ? `  the server is answered ${facts.refusal}; the host sees nothing` : `  the agent is answered ${facts.refusal}${same}`);
  }
  const server = facts.server;
  if (server?.manifest !== undefined) lines.push(`server: ${server.key} (${server.manifest} serial ${server.serial}, ${server.transport})`);
  if (facts.arguments) lines.push(`prompt: as its signed manifest defines it; arguments: ${facts.arguments.map((argument) => `${argument.name}${argument.required ? ' (required)' : ''}`).join(', ') || 'none'}`);
  if (facts.kind === 'resource' && facts.decision === 'allow') lines.push(`resource: read and subscribed through ${server?.key}; a read returns only the contents whose URIs its grants cover, cleaned like a tool result`);
  if (facts.grantedOn && facts.grantedOn.length > 1) lines.push(`granted on: ${facts.grantedOn.join(', ')}`);
  if (facts.terms && facts.serverRequest && facts.grant) lines.push(...termsLines(facts.agent, server?.key ?? '', facts.serverRequest, facts.terms));
  if (facts.grant) lines.push(`decided by: ${surfaceGrantText(facts.grant)}`);
  for (const other of facts.alsoMatching) lines.push(`${facts.grant ? 'also matches' : 'matches'}: ${surfaceGrantText(other)}`);
  const ks = facts.killSwitch;
  const reads = facts.kind === 'server-request' ? '; only read tools run, so only their calls can ask' : `; ${facts.kind}s are reads: it does not withhold them`;
  lines.push(`kill switch: ${ks.state}${ks.changedAt ? ` (set by ${printable(ks.changedBy ?? '')} at ${ks.changedAt})` : ''}${ks.state === 'readonly' ? reads : ks.state === 'on' ? '; every request is refused' : ''}`);
  return `${lines.join('\n')}\n`;
}

function subjectText(facts: SurfaceExplanation): string {
  if (facts.kind === 'prompt') return `prompt "${printable(facts.prompt ?? '')}"`;
  if (facts.kind === 'resource') return `resource "${printable(facts.resource ?? '')}"`;
  return `server request "${facts.serverRequest}" from server "${printable(facts.server?.key ?? '')}"`;
}

function termsLines(agent: string, server: string, kind: ServerRequestKind, terms: ServerRequestTerms): string[] {
  const calls = terms.callableTools === 0 ? `agent "${agent}" may call none of ${server}'s tools, so it has no call to ask during` : `agent "${agent}" may call ${terms.callableTools} of ${server}'s tools`;
  const lines = [
    `terms: only during the agent's tool calls to ${server} (never during a resource read or a prompt, never outside a call); ${calls}`,
    `  the host must have declared ${kind === 'sampling' ? 'sampling' : 'elicitation (form mode)'} support; each request and answer at most ${terms.maxBytes} bytes (/limits/maxServerRequestBytes); each answer within ${terms.answerTimeoutMs} ms (/limits/answerTimeoutMs)`,
  ];
  const attribution = terms.attribution;
  if (attribution) {
    const verdict = attribution.sole ? `only "${agent}" does, so a request is relayed, but only while exactly one call is in flight to the server` : unattributable(server, attribution.agentsReaching);
    lines.push(`  stdio, 2025 era: nothing ties a request to a call, so one is relayed only while one agent's grants reach the server (a server pinned to era: modern, or one with era: auto that negotiates 2026-07-28, is not limited so): ${verdict}`);
  }
  return lines;
}

function surfaceGrantText(grant: SurfaceGrantFacts): string {
  if (grant.prompts) return `${grant.path}: prompts [${grant.prompts.join(', ')}]`;
  if (grant.resources) return `${grant.path}: server ${grant.server}, resources [${grant.resources.join(', ')}]`;
  return `${grant.path}: server ${grant.server}, serverRequests [${grant.serverRequests?.join(', ')}]`;
}

function formatListing(listing: Listing): string {
  const lines: string[] = [];
  const ks = listing.killSwitch;
  if (ks.state === 'on') lines.push(`kill switch: on${ks.changedAt ? ` (set by ${printable(ks.changedBy ?? '')} at ${ks.changedAt})` : ''}: the agent sees no tools, prompts or resources and every request is refused until it is turned off`);
  if (ks.state === 'readonly') lines.push(`kill switch: readonly${ks.changedAt ? ` (set by ${printable(ks.changedBy ?? '')} at ${ks.changedAt})` : ''}: of the tools below, only the read tools are listed and callable now; prompts and resources are reads and stay`);
  if (listing.tools.length === 0) {
    lines.push(`agent "${listing.agent}" may use no tools: no grant of /agents/${listing.agent}/allow matches a tool of an accepted manifest and its access class (mcp-warden policy explain says why for one tool)`);
  } else {
    lines.push(`agent "${listing.agent}": ${listing.tools.length} tool(s); agent limit ${limitText(listing.agentLimit)} (${listing.agentLimit.source})`);
    const rows = listing.tools.map((tool) => [
      tool.name,
      tool.access,
      tool.approval === 'none' ? 'no approval' : tool.approval === 'required' ? 'approval out of band' : `approval by user (else ${tool.fallback === 'required' ? 'out of band' : 'refused'})`,
      tool.deduplicated ? `deduplicated ${tool.deduplicationWindowSeconds} s` : 'not deduplicated',
      `${limitText(tool.limit)} (${tool.limit.source})${tool.quarantined ? '  [server quarantined: withdrawn]' : ''}`,
    ]);
    lines.push(...table(rows));
  }
  lines.push(...surfaceListingLines(listing));
  return `${lines.join('\n')}\n`;
}

function surfaceListingLines(listing: Listing): string[] {
  const lines: string[] = [];
  const { prompts, resources, serverRequests } = listing;
  if (prompts.length === 0) lines.push(`prompts: none (no prompt grant of /agents/${listing.agent}/allow matches a prompt of an accepted manifest)`);
  else lines.push(`prompts: ${prompts.length}`, ...table(prompts.map((prompt) => [prompt.name, `${prompt.grant}${prompt.quarantined ? '  [server quarantined: withdrawn]' : ''}`])));
  if (resources.length === 0) lines.push('resources: none (no resource grant)');
  else {
    lines.push('resources: read, listed and subscribed by URI pattern, once the URI passes the broker\'s URI checks; a URI granted on two servers is read from neither');
    lines.push(...table(resources.map((grant) => [grant.grant, `server ${grant.server}: ${grant.patterns.join(', ')}${standingNote(grant.serverState)}`])));
  }
  if (serverRequests.allowed.length === 0) {
    lines.push('server requests: none; no server may ask this agent\'s host for sampling or elicitation (default deny)');
    return lines;
  }
  lines.push('server requests, during this agent\'s tool calls to the server:');
  lines.push(...table(serverRequests.allowed.map((entry) => [entry.server, entry.kind, `${entry.grant}${standingNote(entry.serverState)}${entry.unattributable ? '  [refused: other agents reach this stdio server (unattributable)]' : ''}`])));
  const servers = [...new Set(serverRequests.allowed.map((entry) => entry.server))];
  const missing = servers.flatMap((server) => SERVER_REQUEST_KINDS.filter((kind) => !serverRequests.allowed.some((entry) => entry.server === server && entry.kind === kind)).map((kind) => `${kind} from ${server}, `));
  lines.push(`  everything else is denied by default: ${missing.join('')}any request from any other server`);
  return lines;
}

function standingNote(standing: Standing): string {
  if (standing === 'ok') return '';
  if (standing === 'quarantined') return '  [server quarantined]';
  if (standing === 'not-an-mcp-server') return '  [not an MCP server: matches nothing]';
  return `  [server ${standing === 'refused' ? 'refused' : 'not configured or disabled'}: matches nothing]`;
}

/** Rows as columns padded to their widest cell; the last column is left as it is. */
function table(rows: readonly (readonly string[])[]): string[] {
  const columns = Math.max(0, ...rows.map((row) => row.length)) - 1;
  const widths = Array.from({ length: columns }, (_, column) => Math.max(...rows.map((row) => row[column]?.length ?? 0)));
  return rows.map((row) => `  ${row.map((cell, column) => (column < columns ? cell.padEnd(widths[column] ?? 0) : cell)).join('  ')}`);
}

/** Text from the command line or the store, safe to print: invisible and control characters escaped. */
function printable(text: string): string {
  return text.replace(new RegExp(`${INVISIBLE.source}|[\\t\\n]`, 'gu'), (char) => `\\u{${char.codePointAt(0)?.toString(16)}}`);
}
