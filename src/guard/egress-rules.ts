import { canonicalAddress, classifyAddress, parseAddressBlock, type AddressBlock } from './address-class.ts';

/** Why an outbound request was refused; audited with every refusal. */
export type EgressReason =
  | 'not-allowlisted' // no rule allows the scheme, host, port, method and path
  | 'private-address' // the host is, or resolves to, an address no rule allows
  | 'unresolvable' // the host name did not resolve
  | 'redirect-denied' // a redirect pointed at a destination refused for one of the reasons above
  | 'too-many-redirects'
  | 'too-large' // the response (headers or body) is over the cap
  | 'tls-unverified' // the server's certificate did not verify (untrusted issuer, self-signed, expired, wrong name)
  | 'tls-pin-mismatch'; // the certificate verified, but its public key is not one the manifest pins

/** A refused outbound request. Thrown through undici; callers find it in an error's cause chain. */
export class EgressRefusal extends Error {
  readonly code = 'WARDEN_EGRESS_DENIED';
  readonly reason: EgressReason;
  /** scheme://host:port of the refused request. */
  readonly origin: string;
  readonly address: string | undefined;
  readonly range: string | undefined;

  constructor(reason: EgressReason, origin: string, message: string, where: { address?: string; range?: string } = {}) {
    super(message);
    this.name = 'EgressRefusal';
    this.reason = reason;
    this.origin = origin;
    this.address = where.address;
    this.range = where.range;
  }
}

/** One allow rule of the security team's egress list, compiled at load. */
export interface EgressRule {
  /** The rule's place in the config, for messages: /egress/allow/N. */
  readonly path: string;
  readonly destination: string;
  readonly scheme: 'http:' | 'https:';
  /** Lowercase, no trailing dot; for *.domain, the domain. IPv6 without brackets. */
  readonly host: string;
  readonly wildcard: boolean;
  readonly port: number;
  /** Upper-case methods; undefined: any. */
  readonly methods: ReadonlySet<string> | undefined;
  /** Path prefixes, as sent (percent-encoded); undefined: any. */
  readonly paths: readonly string[] | undefined;
  /** Non-public addresses this rule may connect to. Public addresses need no entry. */
  readonly addresses: readonly AddressBlock[];
}

export interface EgressPolicy {
  /** The config's egress section as written (JSON): a change means a new dispatcher. */
  readonly source: string;
  readonly rules: readonly EgressRule[];
  readonly connectTimeoutMs: number;
  readonly maxResponseBytes: number;
  readonly maxHeaderBytes: number;
  /** Redirects a native HTTP tool's GET follows; 0: none. */
  readonly maxRedirects: number;
}

export interface RawEgressRule {
  readonly destination: string;
  readonly methods?: readonly string[];
  readonly paths?: readonly string[];
  readonly addresses?: readonly string[];
}

const DEFAULT_PORT = { 'http:': 80, 'https:': 443 } as const;
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * Compiles one rule; throws an Error whose message says what to write instead. A rule is
 * refused at load, never at request time: a destination that is not scheme://host[:port],
 * a host that is not a DNS name or IP address, a wildcard on an address, and a
 * non-public address destination whose own address the rule does not list (a rule that
 * could never match).
 */
export function compileEgressRule(raw: RawEgressRule, path: string): EgressRule {
  const match = /^(https?):\/\/(\*\.)?(\[[0-9A-Fa-f:.]+\]|[^/:?#@[\]\s]+)(?::(\d{1,5}))?\/?$/.exec(raw.destination);
  if (!match) throw new Error(`destination "${raw.destination}" must be scheme://host[:port], e.g. https://api.example.com or https://*.example.com:8443`);
  const scheme = `${match[1]}:` as 'http:' | 'https:';
  const wildcard = match[2] !== undefined;
  const port = match[4] === undefined ? DEFAULT_PORT[scheme] : Number(match[4]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`destination "${raw.destination}": port must be 1-65535`);
  const address = canonicalAddress(match[3]!);
  let host: string;
  if (address !== undefined) {
    if (wildcard) throw new Error(`destination "${raw.destination}": a wildcard applies to DNS names, not addresses`);
    host = address;
  } else {
    host = match[3]!.toLowerCase().replace(/\.$/, '');
    if (host.startsWith('[') || !host.split('.').every((label) => LABEL.test(label))) {
      throw new Error(`destination "${raw.destination}": "${match[3]}" is not a DNS name (write internationalised names in their xn-- form)`);
    }
    if (wildcard && !host.includes('.')) throw new Error(`destination "${raw.destination}": a wildcard must name a domain (*.example.com), not a whole top-level domain`);
  }
  const addresses = (raw.addresses ?? []).map((text) => parseAddressBlock(text));
  if (address !== undefined) {
    const own = classifyAddress(address)!;
    if (!own.isPublic && !addresses.some((block) => block.contains(address))) {
      throw new Error(`destination "${raw.destination}" is a ${own.range} address; list it under addresses (e.g. addresses: ["${own.address}"]) to allow it`);
    }
  }
  for (const prefix of raw.paths ?? []) {
    if (!prefix.startsWith('/')) throw new Error(`path prefix "${prefix}" must start with /`);
  }
  return {
    path,
    destination: raw.destination,
    scheme,
    host,
    wildcard,
    port,
    methods: raw.methods ? new Set(raw.methods.map((method) => method.toUpperCase())) : undefined,
    paths: raw.paths,
    addresses,
  };
}

/** The host a URL names, as rules compare it: lowercase, no trailing dot, IPv6 without brackets. */
export function hostOf(hostname: string): string {
  const bare = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  return canonicalAddress(bare) ?? bare.toLowerCase().replace(/\.$/, '');
}

/** The URL's port, or its scheme's default. */
export function portOf(url: URL): number {
  return url.port === '' ? DEFAULT_PORT[url.protocol as 'http:' | 'https:'] : Number(url.port);
}

/** scheme://host[:port] as URL.origin writes it (the default port left out), for messages and audit records. */
export function originText(scheme: string, host: string, port: number): string {
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return port === DEFAULT_PORT[scheme as 'http:' | 'https:'] ? `${scheme}//${shownHost}` : `${scheme}//${shownHost}:${port}`;
}

/** Rules whose scheme, host and port match: at connect time, these decide which addresses are allowed. */
export function rulesForOrigin(policy: EgressPolicy, scheme: string, host: string, port: number): EgressRule[] {
  return policy.rules.filter(
    (rule) => rule.scheme === scheme && rule.port === port && (rule.wildcard ? host.endsWith(`.${rule.host}`) : host === rule.host),
  );
}

/**
 * The request-level check, before any connection: some rule must allow the URL's scheme,
 * host and port, the method and the path. Returns the refusal, or undefined.
 */
export function checkRequest(policy: EgressPolicy, url: URL, method: string): EgressRefusal | undefined {
  const origin = `${url.protocol}//${url.host}`;
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return new EgressRefusal('not-allowlisted', origin, `scheme ${url.protocol} is never allowed`);
  }
  if (url.username !== '' || url.password !== '') {
    return new EgressRefusal('not-allowlisted', origin, 'a URL with user information is never requested');
  }
  const candidates = rulesForOrigin(policy, url.protocol, hostOf(url.hostname), portOf(url));
  if (candidates.length === 0) return new EgressRefusal('not-allowlisted', origin, `no egress rule allows ${origin}`);
  const upper = method.toUpperCase();
  const allowed = candidates.some(
    (rule) => (rule.methods === undefined || rule.methods.has(upper)) && (rule.paths === undefined || rule.paths.some((prefix) => url.pathname.startsWith(prefix))),
  );
  if (!allowed) return new EgressRefusal('not-allowlisted', origin, `no egress rule allows ${upper} ${url.pathname} on ${origin}`);
  return undefined;
}

/**
 * The connect-time check of one address a host resolved to (or the host itself, when it is
 * an address): public unicast addresses pass; any other range passes only when a rule for
 * this origin lists a block that contains it.
 */
export function checkAddress(rules: readonly EgressRule[], origin: string, address: string): EgressRefusal | undefined {
  const found = classifyAddress(address);
  if (!found) return new EgressRefusal('unresolvable', origin, `"${address}" is not an IP address`, { address });
  if (found.isPublic) return undefined;
  if (rules.some((rule) => rule.addresses.some((block) => block.contains(found.address)))) return undefined;
  return new EgressRefusal('private-address', origin, `${origin} is at ${found.address}, a ${found.range} address no egress rule allows`, { address: found.address, range: found.range });
}

/** Finds an egress refusal in an error or its causes (undici and fetch wrap what the connector threw). */
export function findEgressRefusal(error: unknown): EgressRefusal | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 8 && current instanceof Error; depth++) {
    if (current instanceof EgressRefusal) return current;
    current = (current as Error & { cause?: unknown }).cause;
  }
  return undefined;
}
