import { lookup } from 'node:dns/promises';
import { Agent, buildConnector, type Dispatcher } from 'undici';
import { checkAddress, checkRequest, EgressRefusal, hostOf, rulesForOrigin, type EgressPolicy } from '../guard/egress-rules.ts';
import { canonicalAddress } from '../guard/address-class.ts';

/** Resolves a host name to every address it has. Injected in tests; the system resolver otherwise. */
export type Resolver = (hostname: string) => Promise<readonly string[]>;

export const systemResolver: Resolver = async (hostname) => (await lookup(hostname, { all: true, order: 'verbatim' })).map((entry) => entry.address);

/** Most addresses one name may resolve to before the answer is treated as hostile. */
const MAX_ADDRESSES = 64;

/**
 * The one dispatcher every outbound request of the broker goes through (native HTTP tools
 * and Streamable HTTP servers alike). Two checks, both against the same policy:
 * - per request, before any connection: the scheme, host, port, method and path must be
 *   allowed by a rule (checkRequest);
 * - per connection: the host is resolved once, every address it resolves to is checked,
 *   and the socket is opened to the address that was checked, so a second lookup (DNS
 *   rebinding) cannot change where it goes. TLS still verifies the certificate against
 *   the host name (servername).
 * A refusal is an EgressRefusal, which undici passes to the caller as the error (or its cause).
 */
export function createEgressAgent(policy: EgressPolicy, resolve: Resolver = systemResolver): Dispatcher {
  const connectSocket = buildConnector({ timeout: policy.connectTimeoutMs });

  const connect: buildConnector.connector = (options, callback) => {
    const host = hostOf(options.hostname);
    const port = Number(options.port) || (options.protocol === 'https:' ? 443 : 80);
    const origin = `${options.protocol}//${host.includes(':') ? `[${host}]` : host}:${port}`;
    const rules = rulesForOrigin(policy, options.protocol, host, port);
    if (rules.length === 0) {
      callback(new EgressRefusal('not-allowlisted', origin, `no egress rule allows ${origin}`), null);
      return;
    }
    void (async () => {
      let addresses: readonly string[];
      try {
        addresses = await addressesOf(host, resolve, origin);
        // Every address is checked, not only the one used: an answer that mixes a public
        // address with a private one is refused whole.
        for (const candidate of addresses) {
          const refusal = checkAddress(rules, origin, candidate);
          if (refusal) throw refusal;
        }
      } catch (error) {
        callback(error instanceof Error ? error : new Error(String(error)), null);
        return;
      }
      const isName = canonicalAddress(host) === undefined;
      // The checked addresses in the resolver's order, the next one tried when a connection fails.
      const attempt = (index: number): void => {
        connectSocket(
          {
            ...options,
            hostname: addresses[index]!,
            // TLS: SNI and the certificate check use the name, never the address.
            servername: options.protocol === 'https:' && isName ? (options.servername ?? host) : undefined,
          } as buildConnector.Options,
          (error, socket) => {
            if (error && index + 1 < addresses.length) attempt(index + 1);
            else if (error) callback(error, null);
            else callback(null, socket!);
          },
        );
      };
      attempt(0);
    })();
  };

  const agent = new Agent({
    connect,
    maxHeaderSize: policy.maxHeaderBytes,
    // Callers bound each request with their own deadline (the tool's timeout).
    headersTimeout: 0,
    bodyTimeout: 0,
  });
  return agent.compose((dispatch) => (options, handler) => {
    // Concatenated, not resolved: a path such as //other.host/x stays a path on this origin.
    const url = new URL(`${new URL(String(options.origin)).origin}${options.path}`);
    const refusal = checkRequest(policy, url, options.method);
    if (refusal) throw refusal;
    return dispatch(options, handler);
  });
}

async function addressesOf(host: string, resolve: Resolver, origin: string): Promise<readonly string[]> {
  if (canonicalAddress(host) !== undefined) return [host];
  let addresses: readonly string[];
  try {
    addresses = await resolve(host);
  } catch (error) {
    throw new EgressRefusal('unresolvable', origin, `${host} does not resolve (${(error as NodeJS.ErrnoException).code ?? 'lookup failed'})`);
  }
  if (addresses.length === 0) throw new EgressRefusal('unresolvable', origin, `${host} resolves to no address`);
  if (addresses.length > MAX_ADDRESSES) throw new EgressRefusal('unresolvable', origin, `${host} resolves to more than ${MAX_ADDRESSES} addresses`);
  return addresses;
}
