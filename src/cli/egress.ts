import { parseArgs } from 'node:util';
import { addressesOf, systemResolver, type Resolver } from '../backends/egress-agent.ts';
import configSchema from '../config/warden-config.schema.json' with { type: 'json' };
import { WardenError } from '../errors.ts';
import { canonicalAddress, classifyAddress } from '../guard/address-class.ts';
import { checkAddress, checkRequest, EgressRefusal, hostOf, originText, portOf, rulesForOrigin, type EgressPolicy, type EgressReason, type EgressRule } from '../guard/egress-rules.ts';
import { INVISIBLE } from '../guard/invisible.ts';

/** The methods an egress rule may name: the config schema's list, so the two cannot drift. */
const METHODS: readonly string[] = configSchema.properties.egress.properties.allow.items.properties.methods.items.enum;

const HELP = `Usage: mcp-warden egress check --config FILE URL [--method METHOD] [--resolve] [--json]

Answers "would the broker send this request, and why?" from the config's egress section,
without sending anything. The broker's own outbound requests (native HTTP tools and
Streamable HTTP servers) are refused unless a rule of /egress/allow allows them.

check  The verdict (allow or deny) for METHOD URL, checked in the broker's order:
         1. the request: one rule must allow its scheme, host and port (the origin), its
            method and its path. Allowed: the rule that allows it, as its config path
            (/egress/allow/N), and its destination. Refused [not-allowlisted]: whether no
            rule is for the origin at all, or rules are but none allows this method and
            path (each with what it misses). A URL that is not http or https, or that
            holds a user name or password, is always refused.
         2. the addresses, which the broker checks when it connects: every address the
            host resolves to must be public, or inside the addresses of a rule for the
            origin, else [private-address]; a host that does not resolve is
            [unresolvable]. A host written as an IP address (in any notation a URL
            accepts: http://2130706433/ is 127.0.0.1) is always checked; a host name only
            with --resolve.
       Then the limits every outbound request has: connect timeout, response body and
       header caps, redirects.

Options:
  --config FILE    the broker's config (warden.yaml)
  --method METHOD  the request's method (default GET): any a rule may name,
                   ${METHODS.join(', ')}
  --resolve        resolve a host name now with the system resolver and check every
                   address it has, as the broker does. DNS may answer differently later:
                   the broker resolves again for each connection and checks that answer.
  --json           print one JSON object instead of text
  -h, --help       this help

Exit 0 when the broker would send the request (for a host name without --resolve: as far
as the rules go, its addresses are checked when the broker connects); 1 when it would
refuse it; 2 for a usage error (no URL, a URL that does not parse, an unknown method);
3 for a config problem; 9 when the state store cannot be read.
`;

export async function runEgress(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string' },
      method: { type: 'string' },
      resolve: { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [sub, input, ...extra] = positionals;
  if (sub !== 'check') {
    throw new WardenError('WARDEN_USAGE', `${sub === undefined ? 'missing subcommand' : `unknown subcommand "${printable(sub)}"`}; expected: mcp-warden egress check --config FILE URL; see mcp-warden egress --help`);
  }
  if (input === undefined) throw new WardenError('WARDEN_USAGE', 'egress check needs the URL to check, e.g. mcp-warden egress check --config warden.yaml https://api.example.com/v1/items');
  if (extra.length > 0) throw new WardenError('WARDEN_USAGE', `unexpected argument "${printable(extra[0] ?? '')}"; egress check takes one URL`);
  if (values.config === undefined) throw new WardenError('WARDEN_USAGE', 'egress check needs --config FILE, the broker\'s config; see mcp-warden egress --help');
  const method = (values.method ?? 'GET').toUpperCase();
  if (!METHODS.includes(method)) throw new WardenError('WARDEN_USAGE', `--method "${printable(values.method ?? '')}" is not one of ${METHODS.join(', ')}`);
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new WardenError('WARDEN_USAGE', `"${printable(input)}" is not a URL; write it whole, e.g. https://api.example.com/v1/items`);
  }

  // Loaded only now: usage errors and --help answer without compiling the config schema.
  const { loadConfig } = await import('../config/load.ts');
  const config = loadConfig(values.config, { state: 'read-only' });
  const resolve: Resolver | undefined = values.resolve ? systemResolver : undefined;
  const facts = await checkEgress(config.egress, url, method, resolve);
  // As written, unless it holds a password (then only the masked URL is shown).
  const check = { config: config.file, input: url.password === '' ? input : facts.url, ...facts };
  process.stdout.write(values.json ? `${JSON.stringify(check, null, 2)}\n` : formatCheck(check));
  return check.verdict === 'allow' ? 0 : 1;
}

// ---------------------------------------------------------------------------------------
// Facts, as data (the --json output). Every match is decided by the broker's own checks
// (checkRequest, rulesForOrigin, checkAddress); nothing here matches rules itself.

export interface RuleFacts {
  /** The rule's place in the config: /egress/allow/N. */
  readonly path: string;
  readonly destination: string;
  /** null: any method. */
  readonly methods: readonly string[] | null;
  /** null: any path. */
  readonly paths: readonly string[] | null;
  readonly addresses: readonly string[];
}

/** Why a request was not allowlisted, in checkRequest's order. */
export type Unmatched = 'scheme' | 'user-info' | 'origin' | 'method-or-path';

export interface RequestFacts {
  readonly allowed: boolean;
  /** The request check's refusal; null when allowed. */
  readonly refusal: { readonly reason: EgressReason; readonly message: string } | null;
  readonly unmatched: Unmatched | null;
  /** The first rule that allows the request, when one does. */
  readonly rule: RuleFacts | null;
  /** Every rule for the URL's scheme, host and port; at connect time these decide which addresses are allowed. */
  readonly rulesForOrigin: readonly (RuleFacts & { readonly allows: boolean; readonly misses: readonly ('method' | 'path')[] })[];
}

/**
 * The request-level check, before any connection, with the facts behind it. Which rule
 * allows the request, and what each rule for the origin misses, are asked of checkRequest
 * one rule at a time (and with the rule's method or path list lifted), so the answer is
 * the broker's by construction.
 */
export function requestFacts(policy: EgressPolicy, url: URL, method: string): RequestFacts {
  const refusal = checkRequest(policy, url, method);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return { allowed: false, refusal: refusal ? { reason: refusal.reason, message: refusal.message } : null, unmatched: 'scheme', rule: null, rulesForOrigin: [] };
  }
  // User information is refused whatever the rules say; without it, each rule's own answer.
  const bare = new URL(url);
  bare.username = '';
  bare.password = '';
  const allows = (rule: EgressRule) => checkRequest({ ...policy, rules: [rule] }, bare, method) === undefined;
  const rules = rulesForOrigin(policy, url.protocol, hostOf(url.hostname), portOf(url));
  const candidates = rules.map((rule) => {
    if (allows(rule)) return { ...ruleFacts(rule), allows: true, misses: [] };
    const misses: ('method' | 'path')[] = allows({ ...rule, methods: undefined }) ? ['method'] : allows({ ...rule, paths: undefined }) ? ['path'] : ['method', 'path'];
    return { ...ruleFacts(rule), allows: false, misses };
  });
  if (!refusal) {
    const allowing = rules.find(allows);
    return { allowed: true, refusal: null, unmatched: null, rule: allowing ? ruleFacts(allowing) : null, rulesForOrigin: candidates };
  }
  const userInfo = url.username !== '' || url.password !== '';
  return {
    allowed: false,
    refusal: { reason: refusal.reason, message: refusal.message },
    unmatched: userInfo ? 'user-info' : candidates.length === 0 ? 'origin' : 'method-or-path',
    rule: null,
    rulesForOrigin: candidates,
  };
}

export interface AddressFacts {
  readonly address: string;
  /** ipaddr.js's range name; 'unicast' is a public address. */
  readonly range: string;
  readonly public: boolean;
  readonly allowed: boolean;
  /** Rules for the origin whose addresses hold this (non-public) address. */
  readonly listedBy: readonly string[];
  readonly refusal: { readonly reason: EgressReason; readonly message: string } | null;
}

export interface AddressCheck {
  readonly checked: boolean;
  /** ip-literal: the URL's host is an address; resolver: looked up now. */
  readonly from: 'ip-literal' | 'resolver' | null;
  readonly host: string;
  /** Why the addresses were not checked. */
  readonly note: string | null;
  /** The lookup itself failed (unresolvable). */
  readonly lookup: { readonly reason: EgressReason; readonly message: string } | null;
  readonly entries: readonly AddressFacts[];
}

export interface EgressCheck {
  readonly url: string;
  readonly method: string;
  /** scheme://host:port, as the broker's connector names it. */
  readonly origin: string;
  readonly verdict: 'allow' | 'deny';
  /** The first refusal in the broker's order: the request, then the addresses. */
  readonly reason: EgressReason | null;
  readonly message: string;
  readonly rule: RuleFacts | null;
  readonly unmatched: Unmatched | null;
  readonly rulesForOrigin: RequestFacts['rulesForOrigin'];
  /** Every check that refuses, in the broker's order (the broker reports only the first). */
  readonly refusals: readonly { readonly check: 'request' | 'lookup' | 'address'; readonly reason: EgressReason; readonly message: string; readonly address?: string }[];
  readonly addresses: AddressCheck;
  readonly limits: { readonly connectTimeoutMs: number; readonly maxResponseBytes: number; readonly maxHeaderBytes: number; readonly maxRedirects: number };
}

/**
 * What the broker would do with METHOD URL. resolve: look a host name up now (the broker
 * always does, when it connects); without it, only an IP-address host is checked.
 */
export async function checkEgress(policy: EgressPolicy, url: URL, method: string, resolve?: Resolver): Promise<EgressCheck> {
  const request = requestFacts(policy, url, method);
  const isHttp = url.protocol === 'http:' || url.protocol === 'https:';
  const host = hostOf(url.hostname);
  const origin = isHttp ? originText(url.protocol, host, portOf(url)) : `${url.protocol}//${url.host}`;
  const addresses = isHttp ? await addressCheck(policy, url, host, origin, resolve) : notChecked(host, `${url.protocol.slice(0, -1)} URLs are never requested, so nothing is resolved or connected`);

  const refusals: EgressCheck['refusals'][number][] = [];
  if (request.refusal) refusals.push({ check: 'request', ...request.refusal });
  if (addresses.lookup) refusals.push({ check: 'lookup', ...addresses.lookup });
  for (const entry of addresses.entries) if (entry.refusal) refusals.push({ check: 'address', ...entry.refusal, address: entry.address });
  const first = refusals[0];
  const allowedBy = request.rule;
  let message: string;
  if (first) message = first.message;
  else {
    const checked = addresses.from === 'ip-literal' ? `; the address ${host} is allowed` : addresses.checked ? `; every address of ${host} is allowed` : `; the addresses of ${host} are checked when the broker connects`;
    message = `rule ${allowedBy?.path} (${allowedBy?.destination}) allows ${method} ${url.pathname} on ${origin}${checked}`;
  }
  return {
    url: shown(url),
    method,
    origin,
    verdict: first ? 'deny' : 'allow',
    reason: first?.reason ?? null,
    message,
    rule: request.rule,
    unmatched: request.unmatched,
    rulesForOrigin: request.rulesForOrigin,
    refusals,
    addresses,
    limits: { connectTimeoutMs: policy.connectTimeoutMs, maxResponseBytes: policy.maxResponseBytes, maxHeaderBytes: policy.maxHeaderBytes, maxRedirects: policy.maxRedirects },
  };
}

async function addressCheck(policy: EgressPolicy, url: URL, host: string, origin: string, resolve: Resolver | undefined): Promise<AddressCheck> {
  const literal = canonicalAddress(host) !== undefined;
  if (!literal && resolve === undefined) {
    return notChecked(host, `${host} is a name: the broker resolves it when it connects and refuses the request unless every address is public or listed under addresses of a rule for ${origin} (--resolve checks now)`);
  }
  // The connector's own lookup, so the verdict cannot drift from the broker's.
  let found: readonly string[];
  try {
    found = await addressesOf(host, resolve ?? (() => Promise.reject(new Error('no resolver'))), origin);
  } catch (error) {
    if (error instanceof EgressRefusal) return lookupFailed(host, error.message);
    throw error;
  }
  // Every rule for the origin counts here, not only those allowing this method and path: as in the connector.
  const rules = rulesForOrigin(policy, url.protocol, host, portOf(url));
  const entries = found.map((address): AddressFacts => {
    const refusal = checkAddress(rules, origin, address);
    const known = classifyAddress(address);
    return {
      address: known?.address ?? address,
      range: known?.range ?? 'not an IP address',
      public: known?.isPublic ?? false,
      allowed: refusal === undefined,
      listedBy: known && !known.isPublic ? rules.filter((rule) => checkAddress([rule], origin, address) === undefined).map((rule) => rule.path) : [],
      refusal: refusal ? { reason: refusal.reason, message: refusal.message } : null,
    };
  });
  return { checked: true, from: literal ? 'ip-literal' : 'resolver', host, note: null, lookup: null, entries };
}

function notChecked(host: string, note: string): AddressCheck {
  return { checked: false, from: null, host, note, lookup: null, entries: [] };
}

function lookupFailed(host: string, message: string): AddressCheck {
  return { checked: true, from: 'resolver', host, note: null, lookup: { reason: 'unresolvable', message }, entries: [] };
}

function ruleFacts(rule: EgressRule): RuleFacts {
  return {
    path: rule.path,
    destination: rule.destination,
    methods: rule.methods ? [...rule.methods] : null,
    paths: rule.paths ?? null,
    addresses: rule.addresses.map((block) => block.text),
  };
}

/** The URL as parsed, with any password masked: the output may end up in a ticket or a log. */
function shown(url: URL): string {
  if (url.password === '') return url.href;
  const masked = new URL(url);
  masked.password = '****';
  return masked.href;
}

// ---------------------------------------------------------------------------------------
// Text for people.

function formatCheck(check: EgressCheck & { readonly input: string }): string {
  const lines: string[] = [`${check.method} ${printable(check.url)}${check.input === check.url ? '' : ` (written ${printable(check.input)})`}`];
  lines.push(`verdict: ${check.verdict}${check.reason ? ` [${check.reason}]` : ''}`);
  lines.push(`  why: ${printable(check.message)}`);
  if (check.rule) lines.push(`  allowed by ${ruleText(check.rule)}`);
  if (check.unmatched === 'origin') {
    lines.push(`  no rule of /egress/allow is for ${printable(check.origin)}: a rule's destination must name this scheme, host and port`);
  } else if (check.unmatched === 'method-or-path') {
    lines.push(`  rules for ${printable(check.origin)}, none of which allows ${check.method} ${printable(new URL(check.url).pathname)}:`);
    for (const rule of check.rulesForOrigin) lines.push(`    ${ruleText(rule)}; it misses the ${rule.misses.join(' and the ')}`);
  } else if (check.unmatched === 'user-info') {
    lines.push('  the broker never requests a URL with a user name or password; credentials go in headers, from the config');
  }
  const addresses = check.addresses;
  if (!addresses.checked) lines.push(`addresses: not checked: ${printable(addresses.note ?? '')}`);
  else if (addresses.lookup) lines.push(`addresses of ${printable(addresses.host)} (system resolver, now): refused [${addresses.lookup.reason}]: ${printable(addresses.lookup.message)}`);
  else {
    lines.push(addresses.from === 'ip-literal' ? `addresses: the host is the IP address ${addresses.host}` : `addresses of ${printable(addresses.host)} (system resolver, now; the broker looks it up again when it connects):`);
    for (const entry of addresses.entries) {
      const why = entry.allowed
        ? entry.public
          ? 'allowed: a public address'
          : `allowed: listed under addresses of ${entry.listedBy.join(', ')}`
        : `refused [${entry.refusal?.reason}]: list it under addresses of a rule for ${printable(check.origin)} to allow it`;
      lines.push(`  ${entry.address}  ${entry.range}  ${why}`);
    }
  }
  const limits = check.limits;
  lines.push(
    'limits:',
    `  connect:   within ${limits.connectTimeoutMs} ms (/egress/connectTimeoutMs)`,
    `  response:  body at most ${limits.maxResponseBytes} bytes (/egress/maxResponseBytes), headers at most ${limits.maxHeaderBytes} bytes (/egress/maxHeaderBytes)`,
    `  redirects: ${limits.maxRedirects === 0 ? 'none followed' : `at most ${limits.maxRedirects}, followed for native HTTP tools' GET requests only, each hop checked like the first`} (/egress/maxRedirects)`,
  );
  return `${lines.join('\n')}\n`;
}

function ruleText(rule: RuleFacts): string {
  const list = (items: readonly string[] | null, any: string) => (items === null ? any : `[${items.map(printable).join(', ')}]`);
  const addresses = rule.addresses.length > 0 ? `, addresses [${rule.addresses.map(printable).join(', ')}]` : '';
  return `${rule.path}: destination ${printable(rule.destination)}, methods ${list(rule.methods, 'any')}, paths ${list(rule.paths, 'any')}${addresses}`;
}

/** Text from the command line or the config, safe to print: invisible and control characters escaped. */
function printable(text: string): string {
  return text.replace(new RegExp(`${INVISIBLE.source}|[\\t\\n]`, 'gu'), (char) => `\\u{${char.codePointAt(0)?.toString(16)}}`);
}
