import { parseArgs } from 'node:util';
import type { CatalogTool } from '../catalog/build.ts';
import { SEPARATOR } from '../catalog/build.ts';
import { CODE_MODE_SERVER, RUN_CODE } from '../catalog/builtin.ts';
import type { AgentPolicy, WardenConfig } from '../config/types.ts';
import { WardenError, type WardenErrorCode } from '../errors.ts';
import { canonicalAddress } from '../guard/address-class.ts';
import { hostOf, type EgressReason } from '../guard/egress-rules.ts';
import type { RateLimit } from '../guard/rate-limits.ts';
import type { SandboxLimitSettings } from '../manifest/types.ts';
import { runLimits } from '../sandbox/failures.ts';
import { INVISIBLE } from '../guard/invisible.ts';
import { findGrant, matchingGrants, type Grant } from '../policy/grants.ts';
import type { QuarantineRecord } from '../state/store.ts';
import type { KillSwitchRecord } from '../state/switches.ts';
import { requestFacts, type Unmatched } from './egress.ts';

const HELP = `Usage: mcp-warden policy explain --config FILE --agent AGENT --tool TOOL [--json]
       mcp-warden policy list --config FILE --agent AGENT [--json]

Answers "what would the broker do?" from the config, the signed manifests and the state
store, without changing anything and without a running broker.

explain  The decision for one call by AGENT to the exposed tool TOOL (<server>__<tool>):
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
list     The tools AGENT's tools/list shows with the kill switch off, sorted by name, each
         with its access class, approval, deduplication and tool limits; and the kill
         switch, when it is not off.

Options:
  --config FILE   the broker's config (warden.yaml)
  --agent AGENT   an agent of that config
  --tool TOOL     explain: the exposed tool name, as the agent sees it
  --json          print one JSON object instead of text
  -h, --help      this help

Exit 0 whenever a decision or list was printed, whatever it says; 2 for a usage error or
an agent that is not in the config; 3 for a config problem; 9 when the state store
cannot be read.
`;

export async function runPolicy(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string' },
      agent: { type: 'string' },
      tool: { type: 'string' },
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
  if (values.config === undefined || values.agent === undefined) {
    throw new WardenError('WARDEN_USAGE', `policy ${sub} needs --config FILE and --agent AGENT; see mcp-warden policy --help`);
  }
  if (sub === 'explain' && values.tool === undefined) throw new WardenError('WARDEN_USAGE', 'policy explain needs --tool TOOL, the exposed name (<server>__<tool>)');
  if (sub === 'list' && values.tool !== undefined) throw new WardenError('WARDEN_USAGE', '--tool applies to policy explain; policy list shows every tool of the agent');

  // Loaded only now: usage errors and --help answer without compiling the config schema.
  const { loadConfig } = await import('../config/load.ts');
  const config = loadConfig(values.config, { state: 'read-only' });
  const agent = config.agents.get(values.agent);
  if (!agent) {
    throw new WardenError('WARDEN_AGENT_UNKNOWN', `agent "${printable(values.agent)}" is not in ${config.file}; agents: ${[...config.agents.keys()].join(', ') || 'none'}`);
  }
  const state = await readState(config);
  if (sub === 'explain') {
    const explanation = explain(config, agent, values.tool ?? '', state);
    // The answer first, then the facts behind it.
    const { agent: name, tool, decision, reason, cause, refusal, otherwise, ...facts } = explanation;
    const json = { agent: name, tool, decision, reason, cause, refusal, otherwise, ...facts };
    process.stdout.write(values.json ? `${JSON.stringify(json, null, 2)}\n` : formatExplanation(explanation));
  } else {
    const listing = list(config, agent, state);
    process.stdout.write(values.json ? `${JSON.stringify(listing, null, 2)}\n` : formatListing(listing));
  }
  return 0;
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
type DenyCause = 'no-such-server' | 'server-refused' | 'no-such-tool' | 'not-granted' | 'wrong-access' | 'kill-switch' | 'quarantined';

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
  if (!tool) return { ...base, ...unknownTool(config, name), refusal: 'WARDEN_TOOL_NOT_FOUND', alsoMatching: [], matchNameOnly: [] };

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

/** Why an exposed name is not in the catalog. The part before "__" is the server key. */
function unknownTool(config: WardenConfig, name: string): Pick<Explanation, 'decision' | 'cause' | 'reason' | 'server'> {
  const separator = name.indexOf(SEPARATOR);
  const shown = printable(name);
  if (separator <= 0) {
    return { decision: 'deny', cause: 'no-such-tool', reason: `"${shown}" is not an exposed tool name: they are <server>__<tool>, like ${firstToolName(config)}` };
  }
  const key = name.slice(0, separator);
  const toolName = name.slice(separator + SEPARATOR.length);
  if (key === CODE_MODE_SERVER) {
    const reason = name === RUN_CODE
      ? `code mode (${RUN_CODE}) exists only when a grant names it exactly, and none does; add a grant with tools [${RUN_CODE}] (a wildcard never covers it; docs/sandbox.md)`
      : `the broker's own tools are ${RUN_CODE} only`;
    return { decision: 'deny', cause: 'no-such-tool', reason };
  }
  const refused = config.rejected.get(key);
  if (refused) {
    return {
      decision: 'deny',
      cause: 'server-refused',
      server: { key, status: 'refused', reason: refused.reason, message: refused.message, file: refused.file },
      reason: `the manifest of server "${key}" was refused [${refused.reason}]: ${refused.message} (${refused.file}); none of its tools exist until it is accepted (mcp-warden config check)`,
    };
  }
  const manifest = config.servers.get(key);
  if (manifest) {
    const names = manifest.tools.map((tool) => `${key}${SEPARATOR}${tool.name}`);
    const shownNames = names.length > 12 ? `${names.slice(0, 12).join(', ')}, … (${names.length} in all)` : names.join(', ');
    return {
      decision: 'deny',
      cause: 'no-such-tool',
      server: { key, status: 'accepted' },
      reason: `server "${key}" (${manifest.name} serial ${manifest.serial}) has no tool "${printable(toolName)}" in its signed manifest; its tools: ${shownNames || 'none'}`,
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

function firstToolName(config: WardenConfig): string {
  return config.catalog.keys().next().value ?? `notes${SEPARATOR}list_notes`;
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

function grantPath(agent: AgentPolicy, grant: Grant): string {
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
  return { config: config.file, agent: agent.name, killSwitch: killSwitchFacts(state.killSwitch), agentLimit, tools };
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

function formatListing(listing: Listing): string {
  const lines: string[] = [];
  const ks = listing.killSwitch;
  if (ks.state === 'on') lines.push(`kill switch: on${ks.changedAt ? ` (set by ${printable(ks.changedBy ?? '')} at ${ks.changedAt})` : ''}: the agent sees no tools and every call is refused until it is turned off`);
  if (ks.state === 'readonly') lines.push(`kill switch: readonly${ks.changedAt ? ` (set by ${printable(ks.changedBy ?? '')} at ${ks.changedAt})` : ''}: of the tools below, only the read tools are listed and callable now`);
  if (listing.tools.length === 0) {
    lines.push(`agent "${listing.agent}" may use no tools: no grant of /agents/${listing.agent}/allow matches a tool of an accepted manifest and its access class (mcp-warden policy explain says why for one tool)`);
    return `${lines.join('\n')}\n`;
  }
  lines.push(`agent "${listing.agent}": ${listing.tools.length} tool(s); agent limit ${limitText(listing.agentLimit)} (${listing.agentLimit.source})`);
  const rows = listing.tools.map((tool) => [
    tool.name,
    tool.access,
    tool.approval === 'none' ? 'no approval' : tool.approval === 'required' ? 'approval out of band' : `approval by user (else ${tool.fallback === 'required' ? 'out of band' : 'refused'})`,
    tool.deduplicated ? `deduplicated ${tool.deduplicationWindowSeconds} s` : 'not deduplicated',
    `${limitText(tool.limit)} (${tool.limit.source})${tool.quarantined ? '  [server quarantined: withdrawn]' : ''}`,
  ]);
  const widths = [0, 1, 2, 3].map((column) => Math.max(...rows.map((row) => row[column]?.length ?? 0)));
  for (const row of rows) lines.push(`  ${row.map((cell, column) => (column < 4 ? cell.padEnd(widths[column] ?? 0) : cell)).join('  ')}`);
  return `${lines.join('\n')}\n`;
}

/** Text from the command line or the store, safe to print: invisible and control characters escaped. */
function printable(text: string): string {
  return text.replace(new RegExp(`${INVISIBLE.source}|[\\t\\n]`, 'gu'), (char) => `\\u{${char.codePointAt(0)?.toString(16)}}`);
}
