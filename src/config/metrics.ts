import { classifyAddress } from '../guard/address-class.ts';
import { isLoopbackHost, parseListen } from './listen.ts';
import type { ListenAddress, MetricsSettings } from './types.ts';

/** The metrics section as written in the config file. */
export interface RawMetrics {
  readonly listen?: string;
  readonly allowNonLoopback?: boolean;
  readonly allowedHosts?: readonly string[];
}

/**
 * The metrics and health listener's settings. Present in the file means enabled; the
 * address defaults to loopback. Returns the settings, or the problem and the path in the
 * config it is at.
 */
export function compileMetrics(raw: RawMetrics | undefined, http: ListenAddress, defaultListen: string): MetricsSettings | { readonly problem: string; readonly at: string } {
  const text = raw?.listen ?? defaultListen;
  const listen = parseListen(text);
  if (!listen) return { problem: `expected host:port or [ipv6]:port, got "${text}"`, at: '/metrics/listen' };
  const settings: MetricsSettings = {
    enabled: raw !== undefined,
    listen,
    allowNonLoopback: raw?.allowNonLoopback ?? false,
    allowedHosts: raw?.allowedHosts ?? [],
  };
  const problem = metricsListenProblem(listen, settings, http);
  return problem ? { problem, at: '/metrics/listen' } : settings;
}

/**
 * Why the metrics listener may not use this address, or undefined. Its answers name
 * agents, tools and servers, so an address other machines can reach must be asked for
 * in so many words; and it must never share the agents' listener.
 */
export function metricsListenProblem(listen: ListenAddress, settings: Pick<MetricsSettings, 'allowNonLoopback'>, http: ListenAddress | undefined): string | undefined {
  if (!isLoopbackHost(listen.host) && !settings.allowNonLoopback) {
    return `"${listen.host}" is not a loopback address; the metrics listener serves other machines only with metrics.allowNonLoopback: true`;
  }
  if (http && sameListener(listen, http)) {
    return `${listen.host}:${listen.port} is (or overlaps) the agents' HTTP listener (http.listen or --listen); metrics and health need an address of their own`;
  }
  return undefined;
}

/**
 * Whether two listeners could claim the same socket: the same port (not 0, which picks a
 * free one) on the same host, on the wildcard address, or on loopback names that may
 * resolve to each other (localhost).
 */
export function sameListener(a: ListenAddress, b: ListenAddress): boolean {
  if (a.port === 0 || a.port !== b.port) return false;
  const hostA = hostKey(a.host);
  const hostB = hostKey(b.host);
  if (hostA === hostB || hostA === '*' || hostB === '*') return true;
  return (hostA === 'localhost' && isLoopbackHost(hostB)) || (hostB === 'localhost' && isLoopbackHost(hostA));
}

/** An address in canonical form ('*' for the unspecified address), or a name in lower case. */
function hostKey(host: string): string {
  const address = classifyAddress(host);
  if (!address) return host.toLowerCase();
  return address.range === 'unspecified' ? '*' : address.address;
}
