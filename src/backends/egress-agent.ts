import { createHash, X509Certificate } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { Agent, buildConnector, type Dispatcher } from 'undici';
import { checkAddress, checkRequest, EgressRefusal, hostOf, originText, rulesForOrigin, type EgressPolicy } from '../guard/egress-rules.ts';
import { canonicalAddress } from '../guard/address-class.ts';

/** Resolves a host name to every address it has. Injected in tests; the system resolver otherwise. */
export type Resolver = (hostname: string) => Promise<readonly string[]>;

export const systemResolver: Resolver = async (hostname) => (await lookup(hostname, { all: true, order: 'verbatim' })).map((entry) => entry.address);

/** Most addresses one name may resolve to before the answer is treated as hostile. */
export const MAX_ADDRESSES = 64;

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
export function createEgressAgent(policy: EgressPolicy, resolve: Resolver = systemResolver, tls: ServerTls = {}): Dispatcher {
  // HTTP/1.1 only: over HTTP/2 undici does not apply maxHeaderSize, so the header cap would not hold.
  const connectSocket = buildConnector({ timeout: policy.connectTimeoutMs, allowH2: false, ...tlsOptions(tls) } as buildConnector.BuildOptions);

  const connect: buildConnector.connector = (options, callback) => {
    const host = hostOf(options.hostname);
    const port = Number(options.port) || (options.protocol === 'https:' ? 443 : 80);
    const origin = originText(options.protocol, host, port);
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
      // The checked addresses in the resolver's order, the next one tried when a connection
      // fails, but only within connectTimeoutMs of the first attempt: a name with many dead
      // addresses cannot hold a call for one timeout per address.
      const started = Date.now();
      const attempt = (index: number): void => {
        connectSocket(
          {
            ...options,
            hostname: addresses[index]!,
            // TLS: SNI and the certificate check use the name the rules judged, never the
            // address (nor a name taken from a Host header).
            servername: options.protocol === 'https:' && isName ? host : undefined,
          } as buildConnector.Options,
          (error, socket) => {
            const refusal = error ? tlsRefusal(error, origin) : undefined;
            // A certificate that does not verify is refused, not retried at the next address.
            if (error && !refusal && index + 1 < addresses.length && Date.now() - started < policy.connectTimeoutMs) attempt(index + 1);
            else if (error) callback(refusal ?? error, null);
            else callback(null, socket!);
          },
        );
      };
      attempt(0);
    })();
  };

  const agent = new Agent({
    connect,
    allowH2: false,
    maxHeaderSize: policy.maxHeaderBytes,
    // Callers bound each request with their own deadline: a native tool's timeout; for a
    // Streamable HTTP server, the broker's fetch (calls) or nothing (its event stream).
    headersTimeout: 0,
    bodyTimeout: 0,
  });
  return agent.compose((dispatch) => (options, handler) => {
    const refusal = checkRequest(policy, requestUrl(String(options.origin), options.path), options.method);
    if (refusal) throw refusal;
    return dispatch(options, handler);
  });
}

/** One server's TLS settings: what its manifest pins and what the config and credentials provide. */
export interface ServerTls {
  /** Base64 SHA-256 of a SubjectPublicKeyInfo; the server certificate's key must be one of them. */
  readonly spki?: readonly string[];
  /** PEM certificates trusted for this server instead of Node's default set. */
  readonly ca?: string;
  /** PEM holding the client certificate (chain) and its private key, for mutual TLS. */
  readonly clientCertificate?: string;
}

function tlsOptions(tls: ServerTls): Record<string, unknown> {
  // Explicit: left unset, Node reads NODE_TLS_REJECT_UNAUTHORIZED, and 0 there would turn
  // off certificate checks (and with them the public-key pins) for every server.
  const options: Record<string, unknown> = { rejectUnauthorized: true };
  if (tls.ca !== undefined) options['ca'] = tls.ca;
  // One PEM text: the certificate reader skips the key block and the key reader the certificates.
  if (tls.clientCertificate !== undefined) Object.assign(options, { cert: tls.clientCertificate, key: tls.clientCertificate });
  const pins = tls.spki ?? [];
  if (pins.length > 0) {
    // Judged on every handshake: a resumed session must not skip the pin.
    options['maxCachedSessions'] = 0;
    options['checkServerIdentity'] = (host: string, cert: PeerCertificate): Error | undefined => {
      const error = checkServerIdentity(host, cert);
      if (error) return error;
      const found = spkiPin(cert.raw);
      if (pins.includes(found)) return undefined;
      return new EgressRefusal('tls-pin-mismatch', host, `the server's public key (pin ${found}) is not one its manifest pins (${pins.join(', ')})`);
    };
  }
  return options;
}

/** The pin-sha256 of a certificate: base64 SHA-256 of its SubjectPublicKeyInfo (DER). */
export function spkiPin(der: Buffer): string {
  const spki = new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

/** Node's codes for a certificate that did not verify (tls "X509 certificate error codes"), and a name mismatch. */
const CERTIFICATE_ERRORS = new Set([
  'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_CRL', 'UNABLE_TO_DECRYPT_CERT_SIGNATURE', 'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'CERT_SIGNATURE_FAILURE', 'CRL_SIGNATURE_FAILURE', 'CERT_NOT_YET_VALID', 'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID', 'CRL_HAS_EXPIRED', 'ERROR_IN_CERT_NOT_BEFORE_FIELD', 'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD', 'ERROR_IN_CRL_NEXT_UPDATE_FIELD', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_CHAIN_TOO_LONG', 'CERT_REVOKED', 'INVALID_CA',
  'PATH_LENGTH_EXCEEDED', 'INVALID_PURPOSE', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'HOSTNAME_MISMATCH', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** A handshake that failed on the certificate, as an egress refusal (audited like any other). */
function tlsRefusal(error: Error, origin: string): EgressRefusal | undefined {
  if (error instanceof EgressRefusal) return new EgressRefusal(error.reason, origin, error.message);
  const code = (error as NodeJS.ErrnoException).code;
  if (code === undefined || !CERTIFICATE_ERRORS.has(code)) return undefined;
  return new EgressRefusal('tls-unverified', origin, `the certificate of ${origin} was not accepted (${code}); the broker verifies every server's certificate`);
}

/**
 * The URL a request goes to, as the rules must judge it. undici sends the path exactly as
 * given, so a path the URL parser would rewrite (dot segments, backslashes, a path that
 * names another host) is judged by what it would be sent as: it is refused, since the
 * rules could only judge its normalised form. An origin with user information is kept so
 * that checkRequest refuses it.
 */
function requestUrl(origin: string, path: string): URL {
  let base: URL;
  let url: URL;
  try {
    base = new URL(origin);
    // Concatenated, not resolved: //other.host/x stays a path on this origin.
    url = new URL(`${base.protocol}//${base.username || base.password ? `${base.username}:${base.password}@` : ''}${base.host}${path}`);
  } catch {
    throw new EgressRefusal('not-allowlisted', origin, 'the request URL cannot be parsed');
  }
  if (`${url.pathname}${url.search}` !== path) {
    throw new EgressRefusal('not-allowlisted', base.origin, 'the request path is not in normal form (dot segments, backslashes or characters the URL parser rewrites)');
  }
  return url;
}

/**
 * The addresses a connection to host may use, canonical: the host itself when it is an
 * address, else every address the resolver answers (one lookup). Throws EgressRefusal
 * (unresolvable) for no answer, too many, or an answer that is not an address.
 */
export async function addressesOf(host: string, resolve: Resolver, origin: string): Promise<readonly string[]> {
  const literal = canonicalAddress(host);
  if (literal !== undefined) return [literal];
  let addresses: readonly string[];
  try {
    addresses = await resolve(host);
  } catch (error) {
    throw new EgressRefusal('unresolvable', origin, `${host} does not resolve (${(error as NodeJS.ErrnoException).code ?? 'lookup failed'})`);
  }
  if (addresses.length === 0) throw new EgressRefusal('unresolvable', origin, `${host} resolves to no address`);
  if (addresses.length > MAX_ADDRESSES) throw new EgressRefusal('unresolvable', origin, `${host} resolves to more than ${MAX_ADDRESSES} addresses`);
  // Canonical text, so the socket is opened to exactly the address checked and never
  // handed to a resolver again (a resolver answering "127.0.0.1." or "2130706433" would be).
  return addresses.map((address) => {
    const canonical = canonicalAddress(address);
    if (canonical === undefined) throw new EgressRefusal('unresolvable', origin, `${host} resolved to "${address}", which is not an IP address`);
    return canonical;
  });
}
