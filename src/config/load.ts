import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { AUDIT_DEFAULTS } from '../audit/trail.ts';
import { WardenError } from '../errors.ts';
import { DEFAULT_ARGUMENT_LIMITS, type ArgumentLimits } from '../guard/argument-limits.ts';
import { buildCatalog } from '../catalog/build.ts';
import { loadSignedManifest } from '../manifest/load.ts';
import { ManifestRejection } from '../manifest/rejections.ts';
import { compileTrust, type RawTrust, type TrustPolicy } from '../manifest/trust.ts';
import type { Manifest, SandboxLimitSettings } from '../manifest/types.ts';
import { CODE_MODE_SERVER, RUN_CODE, runCodeTool } from '../catalog/builtin.ts';
import { openStateStore, type ManifestHistory } from '../state/store.ts';
import { compileGlob, compileGrants, type RawGrant } from '../policy/grants.ts';
import { compilePromptGrants, compileResourceGrants, compileServerRequestGrants, type RawSurfaceGrant } from '../policy/surface-grants.ts';
import { resourceUriProblem } from '../guard/resource-uri.ts';
import { buildPromptCatalog } from '../catalog/prompts.ts';
import type { RateLimit } from '../guard/rate-limits.ts';
import { classifyAddress } from '../guard/address-class.ts';
import { checkRequest, compileEgressRule, type EgressPolicy, type RawEgressRule } from '../guard/egress-rules.ts';
import { deepFreeze } from './freeze.ts';
import { listenProblem, parseListen } from './listen.ts';
import { compileOAuth, type RawOAuth } from './oauth-settings.ts';
import { compileMetrics, type RawMetrics } from './metrics.ts';
import { readDocumentWithDigest } from './read-document.ts';
import { describeSchemaErrors } from './schema-errors.ts';
import configSchema from './warden-config.schema.json' with { type: 'json' };
import type { AgentPolicy, CredentialSource, RateLimits, RejectedServer, SandboxSettings, WardenConfig } from './types.ts';

export const DEFAULTS = {
  manifestsDir: 'manifests',
  auditFile: 'audit/audit.jsonl',
  auditKeyFile: 'state/audit-signing.key',
  listen: '127.0.0.1:7070',
  metricsListen: '127.0.0.1:9464', // Prometheus /metrics, /healthz, /readyz; loopback only
  maxBodyBytes: 1024 * 1024, // 1 MiB
  callTimeoutMs: 30_000, // 30 s
  maxCallTimeoutMs: 120_000, // 2 min
  answerTimeoutMs: 300_000, // 5 min for a person to answer a server's question
  maxServerRequestBytes: 256 * 1024, // 256 KiB
  breakerTimeouts: 3, // timeouts in a row
  breakerCooldownMs: 30_000, // 30 s
  connectTimeoutMs: 15_000, // 15 s
  maxResultBytes: 64 * 1024, // 64 KiB of result text
  identityKeyFile: 'state/broker-identity.key',
  identityIssuer: 'mcp-warden',
  identityLifetimeSeconds: 60, // 1 min
  logLevel: 'info',
  stateDir: 'state',
  recheckSeconds: 300, // 5 min
  concurrentCalls: 128, // in flight, all agents together
  perAgent: { perMinute: 600, burst: 100, concurrent: 32 },
  perTool: { perMinute: 600, burst: 100, concurrent: 32 },
  approvalWaitSeconds: 30, // a held call answers before most clients' 60 s request timeout
  approvalExpireSeconds: 900, // 15 min
  idempotencyWindowSeconds: 600, // 10 min
  egressConnectTimeoutMs: 10_000, // 10 s
  egressMaxResponseBytes: 1024 * 1024, // 1 MiB
  egressMaxHeaderBytes: 16 * 1024, // 16 KiB
  egressMaxRedirects: 3,
  sandboxMaxDefaultWorkers: 8,
  sandboxWarmIsolates: 2,
  sandboxWorkerMemoryMb: 512,
  sandboxLimits: {
    memoryMb: 64,
    cpuMs: 1000, // 1 s
    wallMs: 30_000, // 30 s
    inputBytes: 1024 * 1024, // 1 MiB
    outputBytes: 64 * 1024, // 64 KiB
    consoleBytes: 64 * 1024, // 64 KiB
  },
  codeModeMaxCalls: 50,
  codeModeConcurrency: 4,
} as const;

const validateConfig = new Ajv2020({ allErrors: true, strict: true }).compile(configSchema);

interface RawConfig {
  manifestsDir?: string;
  servers: Record<string, { manifest: string; name: string; enabled?: boolean; identity?: { audience?: string; lifetimeSeconds?: number }; allowPlainHttp?: boolean; tls?: { ca?: string }; prefix?: boolean; roots?: { uri: string; name?: string }[] }>;
  identity?: { keyFile?: string; issuer?: string };
  agents: Record<string, { tokenSha256?: string; oauthSubject?: string; allow: (RawGrant & RawSurfaceGrant)[]; rateLimit?: RateLimit }>;
  rateLimits?: { concurrent?: number; perAgent?: RateLimit; perTool?: RateLimit; tools?: ({ tools: string[] } & RateLimit)[] };
  approvals?: { waitSeconds?: number; expireSeconds?: number };
  idempotency?: { windowSeconds?: number };
  audit?: { file?: string; keyFile?: string; rotateBytes?: number; checkpointEvery?: number; checkpointMs?: number; fsyncMs?: number; argumentPreviewBytes?: number };
  http?: { listen?: string; allowedHosts?: string[]; allowedOrigins?: string[]; maxBodyBytes?: number; oauth?: RawOAuth };
  metrics?: RawMetrics;
  credentials?: Record<string, Record<string, { env: string } | { file: string }>>;
  limits?: {
    callTimeoutMs?: number;
    maxCallTimeoutMs?: number;
    answerTimeoutMs?: number;
    maxServerRequestBytes?: number;
    connectTimeoutMs?: number;
    maxResultBytes?: number;
    breaker?: { timeouts?: number; cooldownMs?: number };
    arguments?: Partial<ArgumentLimits>;
  };
  log?: { level?: string };
  trust?: RawTrust;
  state?: { dir?: string };
  pinning?: { recheckSeconds?: number };
  egress?: { allow?: RawEgressRule[]; connectTimeoutMs?: number; maxResponseBytes?: number; maxHeaderBytes?: number; maxRedirects?: number };
  sandbox?: {
    workers?: number;
    warmIsolates?: number;
    workerMemoryMb?: number;
    limits?: Partial<SandboxLimitSettings>;
    maxLimits?: Partial<SandboxLimitSettings>;
    codeMode?: { workers?: number; maxCalls?: number; concurrency?: number };
  };
}

export interface LoadConfigOptions {
  /**
   * read-write (serve): accepted manifests are recorded in the state store, so a later
   * rollback is refused. read-only (checks, tests): the history is read, never written.
   */
  readonly state?: 'read-write' | 'read-only';
  /** The time manifest validity is judged at, ms since the epoch. */
  readonly now?: number;
}

/**
 * Loads the security team's config and every manifest it names, checks it all, and returns
 * one frozen object. Anything wrong is a WardenError naming the file and the path inside it;
 * the broker refuses to start rather than run on a config it does not fully understand.
 */
export function loadConfig(file: string, options: LoadConfigOptions = {}): WardenConfig {
  const path = resolve(file);
  const dir = dirname(path);
  const { data, sha256 } = readDocumentWithDigest(path, 'WARDEN_CONFIG_UNREADABLE');
  if (!validateConfig(data)) {
    const problems = describeSchemaErrors(validateConfig.errors);
    throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: invalid config:\n  ${problems.join('\n  ')}`, { file: path, problems });
  }
  const raw = data as unknown as RawConfig;
  const warnings: string[] = [];
  if (CODE_MODE_SERVER in raw.servers) {
    throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /servers/${CODE_MODE_SERVER}: the server key "${CODE_MODE_SERVER}" is the broker's own (${CODE_MODE_SERVER}__run_code); choose another`, { file: path });
  }
  const sandbox = compileSandbox(raw, path);

  const manifestsDir = resolve(dir, raw.manifestsDir ?? DEFAULTS.manifestsDir);
  const trust = compileTrust(raw.trust, path);
  if (trust.keys.size === 0) warnings.push('/trust/publishers: no trusted publishers; every manifest is refused');
  const stateDir = resolve(dir, raw.state?.dir ?? DEFAULTS.stateDir);
  const store = openStateStore(stateDir, options.state ?? 'read-only');
  let loaded: { servers: Map<string, Manifest>; rejected: Map<string, RejectedServer> };
  try {
    loaded = loadServers(raw, manifestsDir, trust, store, options.now ?? Date.now());
  } finally {
    store.close();
  }
  const { servers, rejected } = loaded;
  const identityTokens = new Map<string, { audience: string; lifetimeSeconds: number }>();
  for (const [name, entry] of Object.entries(raw.servers)) {
    if (entry.identity && servers.has(name)) identityTokens.set(name, { audience: entry.identity.audience ?? name, lifetimeSeconds: entry.identity.lifetimeSeconds ?? DEFAULTS.identityLifetimeSeconds });
  }
  // Code mode exists only where a grant names it (a wildcard never does).
  const codeMode = Object.values(raw.agents).some((agent) => agent.allow.some((grant) => grant.tools?.includes(RUN_CODE)));
  const unprefixed = new Set(Object.entries(raw.servers).filter(([, entry]) => entry.prefix === false).map(([name]) => name));
  const catalog = buildCatalog(servers, path, codeMode ? [runCodeTool(sandbox)] : [], unprefixed);
  const prompts = buildPromptCatalog(servers, path, unprefixed);
  const credentials = loadCredentialSources(raw, servers, dir, path, warnings);
  const serverTls = loadServerTls(raw, servers, dir, path, warnings);
  const roots = new Map<string, readonly { uri: string; name?: string }[]>();
  for (const [name, entry] of Object.entries(raw.servers)) {
    const type = servers.get(name)?.transport.type;
    if (!entry.roots || type === undefined) continue;
    if (type === 'http-api' || type === 'sandbox') warnings.push(`/servers/${name}/roots: has no effect; the server is not an MCP server`);
    else roots.set(name, entry.roots);
  }

  const agents = new Map<string, AgentPolicy>();
  const tokenOwners = new Map<string, string>();
  const subjectOwners = new Map<string, string>();
  for (const [name, agent] of Object.entries(raw.agents)) {
    if (agent.tokenSha256 !== undefined) {
      const other = tokenOwners.get(agent.tokenSha256);
      if (other !== undefined) {
        throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /agents/${name}/tokenSha256: the same token hash as agent "${other}"; each agent needs its own token`, { file: path });
      }
      tokenOwners.set(agent.tokenSha256, name);
    }
    checkOAuthAgent(name, agent, raw.http?.oauth !== undefined, subjectOwners, path, warnings);
    checkGrantShapes(name, agent.allow, raw.servers, servers, path, warnings);
    const grants = compileGrants(agent.allow);
    for (const grant of grants) {
      for (const [i, matcher] of grant.matchers.entries()) {
        if (![...catalog.keys()].some((tool) => matcher(tool))) {
          warnings.push(`/agents/${name}/allow/${grant.index}/tools/${i}: "${grant.patterns[i]}" matches no tool`);
        }
      }
    }
    const promptGrants = compilePromptGrants(agent.allow);
    for (const grant of promptGrants) {
      for (const [i, matcher] of grant.matchers.entries()) {
        if (![...prompts.keys()].some((prompt) => matcher(prompt))) warnings.push(`/agents/${name}/allow/${grant.index}/prompts/${i}: "${grant.patterns[i]}" matches no prompt`);
      }
    }
    agents.set(name, {
      name,
      ...(agent.tokenSha256 === undefined ? {} : { tokenSha256: Buffer.from(agent.tokenSha256, 'hex') }),
      ...(agent.oauthSubject === undefined ? {} : { oauthSubject: agent.oauthSubject }),
      grants,
      promptGrants,
      resourceGrants: compileResourceGrants(agent.allow),
      serverRequestGrants: compileServerRequestGrants(agent.allow),
      rateLimit: mergeLimit(mergeLimit(DEFAULTS.perAgent, raw.rateLimits?.perAgent), agent.rateLimit),
    });
  }
  const rateLimits = compileRateLimits(raw, catalog, warnings);
  const egress = compileEgress(raw, servers, path, warnings);
  warnCappedSandboxLimits(servers, sandbox, warnings);

  const listenText = raw.http?.listen ?? DEFAULTS.listen;
  const listen = parseListen(listenText);
  if (!listen) {
    throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /http/listen: expected host:port or [ipv6]:port, got "${listenText}"`, { file: path });
  }
  const allowedHosts = raw.http?.allowedHosts ?? [];
  const problem = listenProblem(listen, allowedHosts);
  if (problem) throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /http/allowedHosts: ${problem}`, { file: path });
  const oauth = raw.http?.oauth === undefined ? undefined : compileOAuth(raw.http.oauth, dir, path, warnings);
  const metrics = compileMetrics(raw.metrics, listen, DEFAULTS.metricsListen);
  if ('problem' in metrics) throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at ${metrics.at}: ${metrics.problem}`, { file: path });

  const maxCallTimeoutMs = raw.limits?.maxCallTimeoutMs ?? DEFAULTS.maxCallTimeoutMs;
  const callTimeoutMs = raw.limits?.callTimeoutMs ?? Math.min(DEFAULTS.callTimeoutMs, maxCallTimeoutMs);
  if (callTimeoutMs > maxCallTimeoutMs) {
    throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /limits/callTimeoutMs: ${callTimeoutMs} is above limits.maxCallTimeoutMs (${maxCallTimeoutMs})`, { file: path });
  }

  return deepFreeze({
    file: path,
    sha256,
    dir,
    servers,
    rejected,
    trust,
    state: { dir: stateDir },
    pinning: { recheckMs: (raw.pinning?.recheckSeconds ?? DEFAULTS.recheckSeconds) * 1000 },
    agents,
    catalog,
    prompts,
    audit: {
      file: resolve(dir, raw.audit?.file ?? DEFAULTS.auditFile),
      keyFile: resolve(dir, raw.audit?.keyFile ?? DEFAULTS.auditKeyFile),
      rotateBytes: raw.audit?.rotateBytes ?? AUDIT_DEFAULTS.rotateBytes,
      checkpointEvery: raw.audit?.checkpointEvery ?? AUDIT_DEFAULTS.checkpointEvery,
      checkpointMs: raw.audit?.checkpointMs ?? AUDIT_DEFAULTS.checkpointMs,
      fsyncMs: raw.audit?.fsyncMs ?? AUDIT_DEFAULTS.fsyncMs,
      argumentPreviewBytes: raw.audit?.argumentPreviewBytes ?? 0,
    },
    http: {
      listen,
      allowedHosts,
      allowedOrigins: raw.http?.allowedOrigins ?? [],
      maxBodyBytes: raw.http?.maxBodyBytes ?? DEFAULTS.maxBodyBytes,
      ...(oauth ? { oauth } : {}),
    },
    metrics,
    credentials,
    serverTls,
    roots,
    identityTokens,
    identity: { keyFile: resolve(dir, raw.identity?.keyFile ?? DEFAULTS.identityKeyFile), issuer: raw.identity?.issuer ?? DEFAULTS.identityIssuer },
    limits: {
      maxResultBytes: raw.limits?.maxResultBytes ?? DEFAULTS.maxResultBytes,
      callTimeoutMs,
      maxCallTimeoutMs,
      answerTimeoutMs: raw.limits?.answerTimeoutMs ?? DEFAULTS.answerTimeoutMs,
      maxServerRequestBytes: raw.limits?.maxServerRequestBytes ?? DEFAULTS.maxServerRequestBytes,
      breaker: { timeouts: raw.limits?.breaker?.timeouts ?? DEFAULTS.breakerTimeouts, cooldownMs: raw.limits?.breaker?.cooldownMs ?? DEFAULTS.breakerCooldownMs },
      connectTimeoutMs: raw.limits?.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
      arguments: { ...DEFAULT_ARGUMENT_LIMITS, ...raw.limits?.arguments },
    },
    rateLimits,
    egress,
    sandbox,
    approvals: {
      waitMs: (raw.approvals?.waitSeconds ?? DEFAULTS.approvalWaitSeconds) * 1000,
      expireMs: (raw.approvals?.expireSeconds ?? DEFAULTS.approvalExpireSeconds) * 1000,
    },
    idempotency: { windowMs: (raw.idempotency?.windowSeconds ?? DEFAULTS.idempotencyWindowSeconds) * 1000 },
    log: { level: raw.log?.level ?? DEFAULTS.logLevel },
    warnings,
  });
}

/** The sandbox settings with their defaults; a default limit above its maximum is refused. */
function compileSandbox(raw: RawConfig, path: string): SandboxSettings {
  const limits: SandboxLimitSettings = { ...DEFAULTS.sandboxLimits, ...raw.sandbox?.limits };
  const maxLimits: SandboxLimitSettings = { ...limits, ...raw.sandbox?.maxLimits };
  for (const [name, value] of Object.entries(limits) as [keyof SandboxLimitSettings, number][]) {
    if (value > maxLimits[name]) {
      throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /sandbox/limits/${name}: ${value} is above sandbox.maxLimits.${name} (${maxLimits[name]})`, { file: path });
    }
  }
  // One worker per CPU, as the pools' default, but not dozens on a large machine: each is a process.
  const cpus = Math.min(availableParallelism(), DEFAULTS.sandboxMaxDefaultWorkers);
  return {
    workers: raw.sandbox?.workers ?? cpus,
    warmIsolates: raw.sandbox?.warmIsolates ?? DEFAULTS.sandboxWarmIsolates,
    workerMemoryMb: raw.sandbox?.workerMemoryMb ?? DEFAULTS.sandboxWorkerMemoryMb,
    limits,
    maxLimits,
    codeMode: {
      workers: raw.sandbox?.codeMode?.workers ?? cpus,
      maxCalls: raw.sandbox?.codeMode?.maxCalls ?? DEFAULTS.codeModeMaxCalls,
      concurrency: raw.sandbox?.codeMode?.concurrency ?? DEFAULTS.codeModeConcurrency,
    },
  };
}

/** A code tool that asks for more than the policy maximum gets the maximum: legal, but worth saying. */
function warnCappedSandboxLimits(servers: ReadonlyMap<string, Manifest>, sandbox: SandboxSettings, warnings: string[]): void {
  for (const [server, manifest] of servers) {
    for (const tool of manifest.tools) {
      for (const [name, value] of Object.entries(tool.sandbox ?? {}) as [keyof SandboxLimitSettings, number][]) {
        if (value > sandbox.maxLimits[name]) warnings.push(`/servers/${server}: tool ${tool.name} asks for sandbox ${name} ${value}; /sandbox/maxLimits/${name} caps it at ${sandbox.maxLimits[name]}`);
      }
    }
  }
}

/** Where cloud providers serve instance credentials: a block that covers them is worth a warning. */
const METADATA_ADDRESSES = ['169.254.169.254', 'fd00:ec2::254'];

/**
 * The egress rules, each refused at load when it cannot mean what it says. A server whose
 * own URL no rule allows is a warning: its requests would all be refused.
 */
function compileEgress(raw: RawConfig, servers: ReadonlyMap<string, Manifest>, path: string, warnings: string[]): EgressPolicy {
  const rules = (raw.egress?.allow ?? []).map((rule, index) => {
    try {
      return compileEgressRule(rule, `/egress/allow/${index}`);
    } catch (error) {
      throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /egress/allow/${index}: ${(error as Error).message}`, { file: path });
    }
  });
  rules.forEach((rule, index) => {
    for (const block of rule.addresses) {
      // Legal, but it undoes what the address check is for.
      if (METADATA_ADDRESSES.some((address) => block.contains(address))) {
        warnings.push(`/egress/allow/${index}/addresses: ${block.text} includes the cloud metadata address (169.254.169.254 or fd00:ec2::254); list only the addresses ${rule.destination} uses`);
      }
    }
  });
  const policy: EgressPolicy = {
    source: JSON.stringify(raw.egress ?? {}),
    rules,
    connectTimeoutMs: raw.egress?.connectTimeoutMs ?? DEFAULTS.egressConnectTimeoutMs,
    maxResponseBytes: raw.egress?.maxResponseBytes ?? DEFAULTS.egressMaxResponseBytes,
    maxHeaderBytes: raw.egress?.maxHeaderBytes ?? DEFAULTS.egressMaxHeaderBytes,
    maxRedirects: raw.egress?.maxRedirects ?? DEFAULTS.egressMaxRedirects,
  };
  for (const [server, manifest] of servers) {
    const transport = manifest.transport;
    if (transport.type === 'http') {
      // Streamable HTTP: POST for messages, GET for the server's stream, DELETE to end the session.
      const refused = ['POST', 'GET', 'DELETE'].map((method) => checkRequest(policy, new URL(transport.url), method)).filter((refusal) => refusal !== undefined);
      if (refused.length > 0) warnings.push(`/servers/${server}: ${refused.map((refusal) => refusal.message).join('; ')}, so the broker cannot use it fully; add an egress rule (see docs/egress.md)`);
    }
    if (transport.type !== 'http-api') continue;
    for (const tool of manifest.tools) {
      if (!tool.http) continue;
      // The path up to its first placeholder: what every call of the tool starts with.
      const fixed = tool.http.path.split('{')[0]!;
      const refusal = checkRequest(policy, new URL(`${transport.baseUrl}${fixed}`), tool.http.method);
      if (refusal) warnings.push(`/servers/${server}: tool ${tool.name}: ${refusal.message}, so its calls are refused; add an egress rule (see docs/egress.md)`);
    }
  }
  return policy;
}

/**
 * An override replaces the fields it sets and keeps the others, so tightening one limit
 * never drops another. A new perMinute without a burst brings its own default burst.
 */
export function mergeLimit(base: RateLimit, override: RateLimit | undefined): RateLimit {
  if (!override) return base;
  const perMinute = override.perMinute ?? base.perMinute;
  const burst = override.burst ?? (override.perMinute === undefined ? base.burst : undefined);
  const concurrent = override.concurrent ?? base.concurrent;
  return {
    ...(perMinute === undefined ? {} : { perMinute }),
    ...(burst === undefined ? {} : { burst }),
    ...(concurrent === undefined ? {} : { concurrent }),
  };
}

/** Rate limits with their defaults; a per-tool pattern that matches nothing is a warning, as for grants. */
function compileRateLimits(raw: RawConfig, catalog: ReadonlyMap<string, unknown>, warnings: string[]): RateLimits {
  const tools = (raw.rateLimits?.tools ?? []).map((entry, index) => {
    const matchers = entry.tools.map(compileGlob);
    for (const [i, matcher] of matchers.entries()) {
      if (![...catalog.keys()].some((tool) => matcher(tool))) warnings.push(`/rateLimits/tools/${index}/tools/${i}: "${entry.tools[i]}" matches no tool`);
    }
    const { tools: patterns, ...limit } = entry;
    return { index, patterns, matchers, limit: mergeLimit(mergeLimit(DEFAULTS.perTool, raw.rateLimits?.perTool), limit) };
  });
  return {
    concurrent: raw.rateLimits?.concurrent ?? DEFAULTS.concurrentCalls,
    perAgent: mergeLimit(DEFAULTS.perAgent, raw.rateLimits?.perAgent),
    perTool: mergeLimit(DEFAULTS.perTool, raw.rateLimits?.perTool),
    tools,
  };
}

/**
 * Verifies every enabled server's signed manifest, then judges it against the manifest
 * history (rollback, equivocation). A refused manifest does not stop the broker: that
 * server is left out, with its reason, and its tools exist for no agent.
 */
function loadServers(
  raw: RawConfig,
  manifestsDir: string,
  trust: TrustPolicy,
  history: ManifestHistory,
  now: number,
): { servers: Map<string, Manifest>; rejected: Map<string, RejectedServer> } {
  const servers = new Map<string, Manifest>();
  const rejected = new Map<string, RejectedServer>();
  for (const [name, entry] of Object.entries(raw.servers)) {
    if (entry.enabled === false) continue;
    const file = resolve(manifestsDir, entry.manifest);
    try {
      const manifest = loadSignedManifest(file, trust, { now });
      // The config says which release belongs in this slot: its credentials and grants
      // must not go to another manifest, however validly signed by its own publisher.
      if (manifest.name !== entry.name) {
        throw new ManifestRejection('unexpected-name', `the manifest is "${manifest.name}"; servers.${name}.name expects "${entry.name}"`, { name: manifest.name });
      }
      checkTransportSecurity(name, entry, manifest);
      const admission = history.admit(manifest.name, manifest.serial, manifest.digest);
      if (admission !== 'accepted') throw historyRejection(admission, manifest, history);
      servers.set(name, manifest);
    } catch (error) {
      // The state store failing stops everything; anything else refuses this server only.
      if (error instanceof WardenError) throw error;
      const rejection = error instanceof ManifestRejection ? error : new ManifestRejection('invalid-manifest', `unexpected failure while checking it: ${error instanceof Error ? error.message : String(error)}`);
      rejected.set(name, { file, reason: rejection.reason, message: rejection.message });
    }
  }
  // Two servers of this config may load releases of the same name. Judged here too, not
  // only by the history, so a read-only check reaches the verdict serve would: only the
  // newest release stands, and a second, different release with its serial is equivocation.
  const loaded = [...servers];
  for (const [index, [name, manifest]] of loaded.entries()) {
    const newer = loaded.find(([, other]) => other.name === manifest.name && other.serial > manifest.serial)?.[1];
    const twin = loaded.slice(0, index).find(([, other]) => other.name === manifest.name && other.serial === manifest.serial && other.digest !== manifest.digest)?.[0];
    if (newer) {
      rejected.set(name, { file: manifest.file, reason: 'rollback', message: `serial ${manifest.serial} of "${manifest.name}" is older than serial ${newer.serial}, loaded for another server of this config` });
    } else if (twin !== undefined) {
      rejected.set(name, { file: manifest.file, reason: 'equivocation', message: `serial ${manifest.serial} of "${manifest.name}" differs from the release with the same serial loaded for server "${twin}"` });
    }
  }
  for (const name of rejected.keys()) servers.delete(name);
  return { servers, rejected };
}

/**
 * A Streamable HTTP server is reached over https. Plain http only to a loopback address
 * written as an address (a name could resolve elsewhere), and only where the config says so.
 */
function checkTransportSecurity(name: string, entry: RawConfig['servers'][string], manifest: Manifest): void {
  if (manifest.transport.type !== 'http') return;
  const url = new URL(manifest.transport.url);
  if (url.protocol === 'https:') return;
  if (entry.allowPlainHttp !== true) {
    throw new ManifestRejection('insecure-transport', `the server's URL ${url.origin} is plain http; remote servers are reached over https only. For a server on this machine, on a loopback address, set servers.${name}.allowPlainHttp: true`);
  }
  const address = classifyAddress(url.hostname);
  if (address?.range !== 'loopback') {
    throw new ManifestRejection('insecure-transport', `servers.${name}.allowPlainHttp applies to loopback addresses (127.0.0.0/8, [::1]) only; ${url.hostname} is not one${address ? '' : ' (a name could resolve anywhere; write the address)'}`);
  }
}

/**
 * An agent's OAuth subject names it alone; a subject or a scoped grant that can never be
 * used (no http.oauth, or no subject for the agent) is a warning, as a grant matching no tool is.
 */
function checkOAuthAgent(name: string, agent: RawConfig['agents'][string], oauth: boolean, owners: Map<string, string>, path: string, warnings: string[]): void {
  if (agent.oauthSubject !== undefined) {
    const other = owners.get(agent.oauthSubject);
    if (other !== undefined) {
      throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /agents/${name}/oauthSubject: the same subject as agent "${other}"; each subject names one agent`, { file: path });
    }
    owners.set(agent.oauthSubject, name);
    if (!oauth) warnings.push(`/agents/${name}/oauthSubject: has no effect without http.oauth`);
  }
  agent.allow.forEach((grant, index) => {
    if (grant.scopes === undefined || (oauth && agent.oauthSubject !== undefined)) return;
    warnings.push(`/agents/${name}/allow/${index}/scopes: this grant never applies: only sessions with an OAuth access token have scopes, and ${oauth ? `agent "${name}" has no oauthSubject` : 'http.oauth is not set'}`);
  });
}

/**
 * What the schema cannot say about one allow entry: approval and access belong to tool
 * grants, server to resource grants; a resource grant for a server that is not configured,
 * or is not an MCP server, can never match.
 */
function checkGrantShapes(name: string, allow: readonly (RawGrant & RawSurfaceGrant)[], servers: RawConfig['servers'], manifests: ReadonlyMap<string, Manifest>, path: string, warnings: string[]): void {
  allow.forEach((grant, index) => {
    const at = `${path}: at /agents/${name}/allow/${index}`;
    const kinds = (['tools', 'prompts', 'resources', 'serverRequests'] as const).filter((kind) => grant[kind] !== undefined);
    if (kinds.length !== 1) {
      throw new WardenError('WARDEN_CONFIG_INVALID', `${at}: a grant names exactly one of tools, prompts, resources or serverRequests (this one has ${kinds.length === 0 ? 'none' : kinds.join(' and ')}); split it into one grant each`, { file: path });
    }
    if (grant.resources !== undefined && grant.server === undefined) throw new WardenError('WARDEN_CONFIG_INVALID', `${at}: a resources grant needs server: the server whose resources it names`, { file: path });
    if (grant.serverRequests !== undefined && grant.server === undefined) throw new WardenError('WARDEN_CONFIG_INVALID', `${at}: a serverRequests grant needs server: the server that may ask`, { file: path });
    if (grant.tools === undefined) {
      for (const field of ['access', 'approval', 'fallback'] as const) {
        if (grant[field] !== undefined) throw new WardenError('WARDEN_CONFIG_INVALID', `${at}/${field}: applies to tool grants only; prompts and resources are read-only`, { file: path });
      }
    }
    if (grant.server !== undefined && grant.resources === undefined && grant.serverRequests === undefined) {
      throw new WardenError('WARDEN_CONFIG_INVALID', `${at}/server: applies to resources and serverRequests grants only`, { file: path });
    }
    if (grant.server !== undefined && !Object.hasOwn(servers, grant.server)) {
      throw new WardenError('WARDEN_CONFIG_INVALID', `${at}/server: no server "${grant.server}" under /servers`, { file: path });
    }
    const type = grant.server === undefined ? undefined : manifests.get(grant.server)?.transport.type;
    if (type === 'http-api' || type === 'sandbox') warnings.push(`/agents/${name}/allow/${index}/server: "${grant.server}" is not an MCP server and ${grant.resources ? 'has no resources' : 'sends no requests'}; this grant matches nothing`);
    (grant.resources ?? []).forEach((pattern, i) => {
      const problem = resourceUriProblem(pattern.replaceAll('*', 'x'));
      if (problem) throw new WardenError('WARDEN_CONFIG_INVALID', `${at}/resources/${i}: "${pattern}" can never match a URI the broker reads: ${problem.replace('the URI', 'the pattern')}`, { file: path });
      // A wildcard beside a name in the host part (*.example.com) could cross "?" or "#" into
      // another host's URI (https://evil.com?.example.com/); a host part that is only a
      // wildcard says "any host" and means it.
      const authority = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/]*)/.exec(pattern)?.[1];
      if (authority?.includes('*') && !/^\*+$/.test(authority)) {
        throw new WardenError('WARDEN_CONFIG_INVALID', `${at}/resources/${i}: "${pattern}" has a wildcard beside a name in its host part; name the host exactly (one grant per host), or write only * for any host`, { file: path });
      }
    });
  });
}

/** Largest CA file read for a server. */
const MAX_CA_BYTES = 1024 * 1024;

/** Each Streamable HTTP server's TLS settings from the config, the CA file read now. */
function loadServerTls(raw: RawConfig, servers: ReadonlyMap<string, Manifest>, dir: string, path: string, warnings: string[]): ReadonlyMap<string, { readonly ca?: string }> {
  const result = new Map<string, { readonly ca?: string }>();
  for (const [name, entry] of Object.entries(raw.servers)) {
    const manifest = servers.get(name);
    if (!manifest) continue; // disabled or refused
    const isHttps = manifest.transport.type === 'http' && manifest.transport.url.startsWith('https:');
    if (entry.allowPlainHttp === true && (manifest.transport.type !== 'http' || isHttps)) warnings.push(`/servers/${name}/allowPlainHttp: has no effect; the server is not a plain-http Streamable HTTP server`);
    if (entry.tls?.ca === undefined) continue;
    if (!isHttps) {
      warnings.push(`/servers/${name}/tls: has no effect; the server is not reached over https`);
      continue;
    }
    const file = resolve(dir, entry.tls.ca);
    const fail = (why: string) => new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /servers/${name}/tls/ca: ${file} ${why}`, { file: path });
    let text: string;
    try {
      const stat = statSync(file);
      if (!stat.isFile()) throw fail('is not a regular file');
      if (stat.size > MAX_CA_BYTES) throw fail(`is ${stat.size} bytes; the limit is ${MAX_CA_BYTES}`);
      text = readFileSync(file, 'utf8');
    } catch (error) {
      if (error instanceof WardenError) throw error;
      throw fail(`cannot be read (${(error as NodeJS.ErrnoException).code ?? 'read error'})`);
    }
    try {
      new X509Certificate(text);
    } catch {
      throw fail('is not a PEM certificate file');
    }
    result.set(name, { ca: text });
  }
  return result;
}

/** Why the manifest history refuses a release; shared with manifest verify. */
export function historyRejection(admission: 'rollback' | 'equivocation', manifest: Manifest, history: ManifestHistory): ManifestRejection {
  const latest = history.latest(manifest.name);
  if (admission === 'rollback') {
    return new ManifestRejection('rollback', `serial ${manifest.serial} of "${manifest.name}" is below serial ${latest?.serial}, already accepted; the publisher must sign a release with a higher serial`);
  }
  return new ManifestRejection('equivocation', `serial ${manifest.serial} of "${manifest.name}" was already accepted with different content (digest ${latest?.digest.slice(0, 16)}…); a changed manifest needs a new serial`);
}

/**
 * Maps each server's declared credentials to their sources. A source for a server or a
 * credential that does not exist is an error (a typo would otherwise leave a server
 * without its credential); a declared credential without a source is a warning, and the
 * server stays unavailable until it has one.
 */
function loadCredentialSources(
  raw: RawConfig,
  servers: ReadonlyMap<string, Manifest>,
  dir: string,
  path: string,
  warnings: string[],
): ReadonlyMap<string, ReadonlyMap<string, CredentialSource>> {
  const result = new Map<string, ReadonlyMap<string, CredentialSource>>();
  const configured = raw.credentials ?? {};
  for (const [server, sources] of Object.entries(configured)) {
    if (!(server in raw.servers)) {
      throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /credentials/${server}: there is no server "${server}"`, { file: path });
    }
    const manifest = servers.get(server);
    if (!manifest) continue; // disabled or refused
    const map = new Map<string, CredentialSource>();
    for (const [name, source] of Object.entries(sources)) {
      if (!manifest.credentials.some((credential) => credential.name === name)) {
        throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /credentials/${server}/${name}: the manifest of "${server}" declares no credential "${name}"`, { file: path });
      }
      map.set(name, 'file' in source ? { file: resolve(dir, source.file) } : { env: source.env });
    }
    result.set(server, map);
  }
  for (const [server, manifest] of servers) {
    for (const credential of manifest.credentials) {
      if (!result.get(server)?.has(credential.name)) {
        warnings.push(`/credentials/${server}/${credential.name}: no source; server "${server}" stays unavailable until it has one`);
      }
    }
  }
  return result;
}

export { sha256Hex } from './token-hash.ts';
