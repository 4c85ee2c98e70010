import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

/** What an IP address is, as the egress check needs it. */
export interface AddressClass {
  /** Canonical text: IPv4 dotted decimal, or IPv6 in RFC 5952 form. IPv4-mapped IPv6 becomes IPv4. */
  readonly address: string;
  /** ipaddr.js's range name ('unicast' for a public address), or 'ipv4Compatible'. */
  readonly range: string;
  /** Only globally routable unicast addresses are public; every special range is not. */
  readonly isPublic: boolean;
}

/**
 * Classifies an IP address in any notation ipaddr.js parses (IPv4 in decimal, octal or hex,
 * whole or in parts; IPv6 with or without an embedded IPv4). IPv4-mapped IPv6
 * (::ffff:a.b.c.d) is classified as the IPv4 address it reaches. Returns undefined for
 * text that is not an IP address.
 */
export function classifyAddress(text: string): AddressClass | undefined {
  const canonical = canonicalAddress(text);
  if (canonical === undefined) return undefined;
  const parsed = ipaddr.process(canonical);
  if (parsed.kind() === 'ipv6') {
    const parts = (parsed as ipaddr.IPv6).parts;
    // ::a.b.c.d, the deprecated IPv4-compatible form (RFC 4291 2.5.5.1): ipaddr.js calls it
    // unicast, yet some stacks route it to the IPv4 address. Never public.
    if (parts.slice(0, 6).every((part) => part === 0) && (parts[6] !== 0 || parts[7]! > 1)) {
      return { address: parsed.toString(), range: 'ipv4Compatible', isPublic: false };
    }
  }
  const range = parsed.range();
  return { address: parsed.toString(), range, isPublic: range === 'unicast' };
}

/**
 * The address as a URL's host parser reads it (WHATWG: IPv4 in any inet_aton notation,
 * IPv6 with embedded IPv4 read as the spec says), or undefined for a name. The URL parser
 * decides, not ipaddr.js, because the URL parser is what turns a request's host into the
 * address connected to (ipaddr.js reads "::a.b.c.d" as IPv4-mapped, the URL parser does not).
 */
export function canonicalAddress(text: string): string | undefined {
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (bare === '' || /[\/?#@\s%]/.test(bare)) return undefined;
  let host: string;
  try {
    host = new URL(`http://${bare.includes(':') ? `[${bare}]` : bare}/`).hostname;
  } catch {
    return undefined;
  }
  const unbracketed = host.startsWith('[') ? host.slice(1, -1) : host;
  return isIP(unbracketed) === 0 ? undefined : unbracketed;
}

/** A compiled CIDR block from the security team's config. */
export interface AddressBlock {
  readonly text: string;
  contains(address: string): boolean;
}

/**
 * Parses "a.b.c.d/n", "x::y/n", or a single address (a /32 or /128). Throws on anything
 * else, and on a block that could never contain an address: IPv4 not in dotted decimal,
 * an IPv6 zone, and IPv4-mapped IPv6 (::ffff:a.b.c.d), which addresses are compared as
 * the IPv4 address they reach — write that instead.
 */
export function parseAddressBlock(text: string): AddressBlock {
  const slash = text.indexOf('/');
  const address = slash === -1 ? text : text.slice(0, slash);
  const canonical = canonicalAddress(address);
  if (canonical === undefined || address.startsWith('[')) throw new Error(`"${text}" is not an IP address or CIDR block`);
  const isV4 = !canonical.includes(':');
  if (isV4 && !ipaddr.IPv4.isValidFourPartDecimal(address)) throw new Error(`"${text}": write IPv4 in dotted decimal (a.b.c.d)`);
  const bitsText = slash === -1 ? (isV4 ? '32' : '128') : text.slice(slash + 1);
  const bits = /^\d{1,3}$/.test(bitsText) ? Number(bitsText) : Number.NaN;
  if (!(bits >= 0 && bits <= (isV4 ? 32 : 128))) throw new Error(`"${text}": the prefix length must be 0-${isV4 ? 32 : 128}`);
  // The URL parser's reading, as for every address the broker compares (not ipaddr.js's own).
  const network = ipaddr.parse(canonical);
  if (network.kind() === 'ipv6' && (network as ipaddr.IPv6).isIPv4MappedAddress()) {
    throw new Error(`"${text}" is an IPv4-mapped IPv6 block; write the IPv4 block it maps (a.b.c.d/n)`);
  }
  return {
    text,
    contains(address: string): boolean {
      const canonical = canonicalAddress(address);
      if (canonical === undefined) return false;
      const parsed = ipaddr.process(canonical);
      return parsed.kind() === network.kind() && parsed.match(network, bits);
    },
  };
}
