import type { ListenAddress } from './types.ts';

/** Parses `host:port` or `[v6]:port`. Returns undefined when the text is not one of those. */
export function parseListen(text: string): ListenAddress | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  if (!match) return undefined;
  const port = Number(match[3]);
  if (!Number.isInteger(port) || port > 65535) return undefined;
  return { host: match[1] ?? match[2] ?? '', port };
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '::1']);

export function isLoopbackHost(host: string): boolean {
  return LOOPBACK_HOSTS.has(host) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * A listener on a non-loopback address must name the Host values it serves: without them
 * the DNS-rebinding check would accept only loopback names and refuse every real client,
 * or worse, invite someone to widen it carelessly. Returns the problem, or undefined.
 */
export function listenProblem(listen: ListenAddress, allowedHosts: readonly string[]): string | undefined {
  if (isLoopbackHost(listen.host) || allowedHosts.length > 0) return undefined;
  return `listening on non-loopback "${listen.host}" requires http.allowedHosts (the Host names clients use), as a DNS-rebinding defence`;
}
