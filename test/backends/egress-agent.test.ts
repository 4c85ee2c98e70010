import assert from 'node:assert/strict';
import dns from 'node:dns';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fetch, request, type Dispatcher } from 'undici';
import { createEgressAgent, type Resolver } from '../../src/backends/egress-agent.ts';
import { compileEgressRule, EgressRefusal, findEgressRefusal, type EgressPolicy, type EgressReason, type RawEgressRule } from '../../src/guard/egress-rules.ts';
import { ROOT } from '../helpers.ts';

interface Corpus {
  allow: RawEgressRule[];
  dns: Record<string, string[] | { error: string } | { repeat: string; times: number }>;
  control: string;
  cases: {
    why: string;
    url?: string;
    via?: 'dispatcher';
    origin?: string;
    path?: string;
    method?: string;
    expect: EgressReason | 'allowed';
    address?: string;
    range?: string;
  }[];
}

type Client = 'request' | 'fetch' | 'dispatcher';
interface Target {
  readonly url: string;
  readonly method?: string;
  /** dispatcher.request only: the origin and path exactly as given. */
  readonly origin?: string;
  readonly path?: string;
}
type Outcome = { readonly status: number; readonly body: string } | { readonly error: unknown };
interface Hit {
  readonly method: string;
  readonly url: string;
  readonly host: string | undefined;
  readonly authorization: string | undefined;
  readonly local: string | undefined;
}

const corpus = JSON.parse(readFileSync(join(ROOT, 'test/attacks/egress.json'), 'utf8')) as Corpus;

/** A loopback HTTP server that records every request and every connection it accepts. */
let server: Server;
let port = 0;
const hits: Hit[] = [];
let connections = 0;

/** Every host name the system resolver was asked for: tests resolve names only through the injected resolver. */
const systemLookups: string[] = [];
const originalLookup = dns.lookup;
const unhandled: unknown[] = [];
const recordUnhandled = (reason: unknown): void => void unhandled.push(reason);

before(async () => {
  // A spy in place of the system resolver: addresses pass through (no network), names never do.
  Reflect.set(dns, 'lookup', function spyLookup(this: unknown, hostname: string, ...rest: unknown[]) {
    if (isIP(hostname) !== 0) return Reflect.apply(originalLookup, this, [hostname, ...rest]);
    systemLookups.push(hostname);
    const callback = rest.at(-1) as (error: Error) => void;
    process.nextTick(callback, Object.assign(new Error(`test: the system resolver was asked for ${hostname}`), { code: 'ENOTFOUND' }));
    return {};
  });
  process.on('unhandledRejection', recordUnhandled);
  server = createServer((req, res) => {
    hits.push({ method: req.method ?? '', url: req.url ?? '', host: req.headers.host, authorization: req.headers.authorization, local: req.socket.localAddress });
    req.resume();
    req.on('end', () => {
      if (req.url?.startsWith('/close')) res.setHeader('connection', 'close');
      res.end(`reached ${req.url}`);
    });
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  process.off('unhandledRejection', recordUnhandled);
  Reflect.set(dns, 'lookup', originalLookup);
});

const withPort = (text: string): string => text.replaceAll('PORT', String(port));

function policyOf(rules: readonly RawEgressRule[]): EgressPolicy {
  return {
    source: JSON.stringify({ allow: rules }),
    rules: rules.map((rule, index) => compileEgressRule({ ...rule, destination: withPort(rule.destination) }, `/egress/allow/${index}`)),
    // Bounds the one connection a bug could open towards a non-loopback address.
    connectTimeoutMs: 3_000,
    maxResponseBytes: 1024 * 1024,
    maxHeaderBytes: 16 * 1024,
    maxRedirects: 0,
  };
}

/** The host as the agent looks it up: lowercase, no trailing dot. */
function hostnameOf(url: string): string {
  return new URL(url).hostname.toLowerCase().replace(/\.$/, '');
}

async function send(client: Client, dispatcher: Dispatcher, target: Target): Promise<Outcome> {
  const method = target.method ?? 'GET';
  const body = method === 'POST' || method === 'PUT' ? '{"probe":true}' : undefined;
  try {
    if (client === 'fetch') {
      const response = await fetch(target.url, { method, dispatcher, ...(body === undefined ? {} : { body }) });
      return { status: response.status, body: await response.text() };
    }
    const response =
      client === 'request'
        ? await request(target.url, { method: method as Dispatcher.HttpMethod, dispatcher, ...(body === undefined ? {} : { body }) })
        : await dispatcher.request({ origin: target.origin ?? new URL(target.url).origin, path: target.path ?? `${new URL(target.url).pathname}${new URL(target.url).search}`, method: method as Dispatcher.HttpMethod, ...(body === undefined ? {} : { body }) });
    return { status: response.statusCode, body: await response.body.text() };
  } catch (error) {
    return { error };
  }
}

/** The refusal in an outcome, checked to surface as the brief says: the error itself, or fetch's TypeError's cause. */
function refusalOf(client: Client, outcome: Outcome): EgressRefusal {
  assert.ok('error' in outcome, `refused, yet the request was answered: HTTP ${'status' in outcome ? outcome.status : ''}`);
  const refusal = findEgressRefusal(outcome.error);
  assert.ok(refusal, `not an egress refusal: ${String(outcome.error)} (cause: ${String((outcome.error as { cause?: unknown }).cause)})`);
  if (client === 'fetch') {
    assert.ok(outcome.error instanceof TypeError);
    assert.equal(outcome.error.cause, refusal);
  } else {
    assert.equal(outcome.error, refusal);
  }
  assert.equal(refusal.code, 'WARDEN_EGRESS_DENIED');
  return refusal;
}

function answered(outcome: Outcome): { status: number; body: string } {
  assert.ok('status' in outcome, `refused: ${'error' in outcome ? String(findEgressRefusal(outcome.error)?.reason ?? outcome.error) : ''}`);
  return outcome;
}

describe('egress dispatcher against the SSRF corpus (test/attacks/egress.json)', () => {
  const lookups: string[] = [];
  const answers = new Map(Object.entries(corpus.dns));
  const resolver: Resolver = async (hostname) => {
    lookups.push(hostname);
    const answer = answers.get(hostname);
    if (answer === undefined) throw Object.assign(new Error(`${hostname}: no such name`), { code: 'ENOTFOUND' });
    if ('error' in answer) throw Object.assign(new Error(`${hostname}: ${answer.error}`), { code: answer.error });
    if ('repeat' in answer) return Array.from({ length: answer.times }, () => answer.repeat);
    return answer;
  };
  let agent: Dispatcher;
  const control = (): Target => ({ url: withPort(corpus.control) });

  before(() => {
    agent = createEgressAgent(policyOf(corpus.allow), resolver);
  });
  after(async () => {
    await agent.close();
  });

  for (const entry of corpus.cases) {
    const clients: Client[] = entry.via === 'dispatcher' ? ['dispatcher'] : ['request', 'fetch'];
    for (const client of clients) {
      it(`${entry.why} [${client}]: ${entry.expect}`, async () => {
        const target: Target =
          entry.via === 'dispatcher'
            ? { url: `${withPort(entry.origin!)}${entry.path}`, origin: withPort(entry.origin!), path: entry.path!, ...(entry.method ? { method: entry.method } : {}) }
            : { url: withPort(entry.url!), ...(entry.method ? { method: entry.method } : {}) };
        const hitsBefore = hits.length;
        const lookupsBefore = lookups.length;
        const outcome = await send(client, agent, target);

        if (entry.expect === 'allowed') {
          const { status, body } = answered(outcome);
          assert.equal(status, 200);
          assert.equal(hits.length, hitsBefore + 1, 'the server saw exactly this request');
          const hit = hits.at(-1)!;
          const sent = entry.via === 'dispatcher' ? entry.path! : `${new URL(target.url).pathname}${new URL(target.url).search}`;
          assert.deepEqual([hit.method, hit.url, hit.local], [target.method ?? 'GET', sent, '127.0.0.1']);
          assert.equal(body, `reached ${sent}`);
        } else {
          if ('status' in outcome) {
            assert.fail(`allowed (HTTP ${outcome.status}); the server saw ${JSON.stringify(hits.slice(hitsBefore).map((hit) => `${hit.method} ${hit.url} (Host: ${hit.host})`))}`);
          }
          const refusal = refusalOf(client, outcome);
          assert.equal(refusal.reason, entry.expect);
          if (entry.address !== undefined) assert.equal(refusal.address, entry.address);
          if (entry.range !== undefined) assert.equal(refusal.range, entry.range);
          assert.equal(hits.length, hitsBefore, `never reached the server, yet it saw ${JSON.stringify(hits.slice(hitsBefore))}`);
          if (entry.expect === 'not-allowlisted') {
            assert.deepEqual(lookups.slice(lookupsBefore), [], 'refused before any lookup');
          } else {
            // One connection attempt, one lookup, of the name in the URL.
            assert.deepEqual(lookups.slice(lookupsBefore), [hostnameOf(target.url)]);
          }
        }

        // The agent still serves an allowed request after the refusal.
        const afterwards = answered(await send(client, agent, control()));
        assert.equal(afterwards.status, 200);
        assert.equal(hits.length, hitsBefore + (entry.expect === 'allowed' ? 2 : 1));
        assert.equal(hits.at(-1)?.url, new URL(control().url).pathname);
      });
    }
  }

  it('the same allowlisted name, its rule listing no address, is refused: 127.0.0.1 is not public', async () => {
    const bare = createEgressAgent(policyOf([{ destination: 'http://api.test:PORT', methods: ['GET', 'POST'], paths: ['/v1/'] }]), resolver);
    try {
      for (const client of ['request', 'fetch'] as const) {
        const hitsBefore = hits.length;
        const refusal = refusalOf(client, await send(client, bare, control()));
        assert.deepEqual([refusal.reason, refusal.address, refusal.range], ['private-address', '127.0.0.1', 'loopback']);
        assert.equal(hits.length, hitsBefore);
        // The agent whose rule lists it reaches it.
        assert.equal(answered(await send(client, agent, control())).status, 200);
        assert.equal(hits.length, hitsBefore + 1);
      }
    } finally {
      await bare.close();
    }
  });

  it('an address the rules allow is reached in any notation; its neighbours are not', async () => {
    const direct = createEgressAgent(policyOf([{ destination: 'http://127.0.0.1:PORT', addresses: ['127.0.0.1'] }]), resolver);
    try {
      const lookupsBefore = lookups.length;
      for (const client of ['request', 'fetch'] as const) {
        for (const host of ['127.0.0.1', '2130706433', '0177.0.0.1', '0x7f.1', '0x7f000001', '127.1']) {
          const hitsBefore = hits.length;
          assert.equal(answered(await send(client, direct, { url: `http://${host}:${port}/x` })).status, 200, host);
          assert.equal(hits.length, hitsBefore + 1, host);
          assert.equal(hits.at(-1)?.host, `127.0.0.1:${port}`, 'the URL parser wrote the address in dotted decimal');
        }
        for (const host of ['127.0.0.2', '0.0.0.0', '[::1]', '[::ffff:127.0.0.1]', 'localhost']) {
          const hitsBefore = hits.length;
          assert.equal(refusalOf(client, await send(client, direct, { url: `http://${host}:${port}/x` })).reason, 'not-allowlisted', host);
          assert.equal(hits.length, hitsBefore, host);
        }
      }
      assert.deepEqual(lookups.slice(lookupsBefore), [], 'an address is never looked up');
    } finally {
      await direct.close();
    }
  });

  it('user information never leaves: fetch refuses the URL, request drops it before the dispatcher', async () => {
    const url = `http://user:secret@api.test:${port}/v1/x`;
    const hitsBefore = hits.length;
    const fetched = await send('fetch', agent, { url });
    assert.ok('error' in fetched, 'fetch refuses a URL with credentials');
    assert.equal(hits.length, hitsBefore);
    // undici's request() passes the dispatcher url.origin, which has no user information:
    // the agent cannot see it, so it must not be sent. A refusal would do as well.
    const requested = await send('request', agent, { url });
    if ('error' in requested) {
      assert.equal(findEgressRefusal(requested.error)?.reason, 'not-allowlisted');
      assert.equal(hits.length, hitsBefore);
    } else {
      assert.equal(hits.length, hitsBefore + 1);
      assert.deepEqual([hits.at(-1)?.authorization, hits.at(-1)?.host], [undefined, `api.test:${port}`]);
    }
  });

  it('every refusal was a rejection the caller saw, the process is alive, and no name reached the system resolver', async () => {
    assert.deepEqual(unhandled, []);
    assert.deepEqual(systemLookups, []);
    assert.ok(lookups.every((name) => answers.has(name)), `looked up a name outside the corpus: ${lookups.filter((name) => !answers.has(name)).join(', ')}`);
    for (const client of ['request', 'fetch'] as const) assert.equal(answered(await send(client, agent, control())).status, 200);
  });
});

describe('DNS rebinding: one lookup per connection, and the socket goes to the address checked', () => {
  /** Answers 127.0.0.1 to the first lookup, then 10.0.0.1 to every later one. */
  function rebinding(): { resolver: Resolver; calls: string[] } {
    const calls: string[] = [];
    return {
      calls,
      resolver: async (hostname) => {
        calls.push(hostname);
        return calls.length === 1 ? ['127.0.0.1'] : ['10.0.0.1'];
      },
    };
  }
  const rules: RawEgressRule[] = [{ destination: 'http://rebind.test:PORT', addresses: ['127.0.0.1'] }];

  for (const client of ['request', 'fetch'] as const) {
    it(`[${client}] the first connection reaches the checked 127.0.0.1; a new agent's connection, now answered 10.0.0.1, is refused`, async () => {
      const { resolver, calls } = rebinding();
      const hitsBefore = hits.length;
      const connectionsBefore = connections;
      const first = createEgressAgent(policyOf(rules), resolver);
      try {
        const outcome = answered(await send(client, first, { url: `http://rebind.test:${port}/first` }));
        assert.equal(outcome.status, 200);
        assert.deepEqual(calls, ['rebind.test'], 'looked up once');
        assert.deepEqual(hits.slice(hitsBefore).map((hit) => [hit.url, hit.host, hit.local]), [['/first', `rebind.test:${port}`, '127.0.0.1']]);
        assert.equal(connections, connectionsBefore + 1);
      } finally {
        await first.close();
      }
      const second = createEgressAgent(policyOf(rules), resolver);
      try {
        const refusal = refusalOf(client, await send(client, second, { url: `http://rebind.test:${port}/second` }));
        assert.deepEqual([refusal.reason, refusal.address, refusal.range], ['private-address', '10.0.0.1', 'private']);
        assert.deepEqual(calls, ['rebind.test', 'rebind.test']);
      } finally {
        await second.close();
      }
      assert.deepEqual(hits.slice(hitsBefore).map((hit) => hit.url), ['/first'], 'the server saw exactly the allowed request');
      assert.equal(connections, connectionsBefore + 1, 'and exactly one connection');
    });

    it(`[${client}] on one agent, a closed connection means a new lookup: the rebound answer is refused`, async () => {
      const { resolver, calls } = rebinding();
      const hitsBefore = hits.length;
      const connectionsBefore = connections;
      const agent = createEgressAgent(policyOf(rules), resolver);
      try {
        // The server answers with Connection: close, so the next request needs a new connection.
        assert.equal(answered(await send(client, agent, { url: `http://rebind.test:${port}/close-after-this` })).status, 200);
        assert.deepEqual(calls, ['rebind.test']);
        const refusal = refusalOf(client, await send(client, agent, { url: `http://rebind.test:${port}/after-rebinding` }));
        assert.deepEqual([refusal.reason, refusal.address], ['private-address', '10.0.0.1']);
        assert.deepEqual(calls, ['rebind.test', 'rebind.test']);
        assert.deepEqual(hits.slice(hitsBefore).map((hit) => hit.url), ['/close-after-this']);
        assert.equal(connections, connectionsBefore + 1);
      } finally {
        await agent.close();
      }
    });
  }

  it('every connection costs exactly one lookup, however many requests it carries', async () => {
    const calls: string[] = [];
    const resolver: Resolver = async (hostname) => {
      calls.push(hostname);
      return ['127.0.0.1'];
    };
    const connectionsBefore = connections;
    const hitsBefore = hits.length;
    const agent = createEgressAgent(policyOf([{ destination: 'http://count.test:PORT', addresses: ['127.0.0.1'] }]), resolver);
    try {
      for (let i = 0; i < 4; i++) assert.equal(answered(await send('request', agent, { url: `http://count.test:${port}/sequential/${i}` })).status, 200);
      const together = await Promise.all([0, 1, 2].map((i) => send('fetch', agent, { url: `http://count.test:${port}/together/${i}` })));
      for (const outcome of together) assert.equal(answered(outcome).status, 200);
      assert.equal(answered(await send('request', agent, { url: `http://count.test:${port}/close-now` })).status, 200);
      assert.equal(answered(await send('request', agent, { url: `http://count.test:${port}/after-close` })).status, 200);
    } finally {
      await agent.close();
    }
    assert.equal(hits.length, hitsBefore + 9);
    const opened = connections - connectionsBefore;
    assert.ok(opened >= 2, 'the Connection: close answer forced a second connection');
    assert.equal(calls.length, opened, `${calls.length} lookups for ${opened} connections`);
    assert.ok(calls.every((name) => name === 'count.test'));
  });
});

describe('the socket is opened to the checked address, never to the resolver\'s text', () => {
  it('an answer in another notation of an allowed address is reached without a second lookup, or refused', async () => {
    // A resolver may answer an address in any notation classifyAddress reads. Connecting by
    // that text hands it to the system resolver (getaddrinfo) again: "127.0.0.1." is then a
    // DNS name, a second lookup whose answer nobody checked.
    const outcomes: string[] = [];
    for (const answer of ['127.0.0.1', '::ffff:127.0.0.1', '2130706433', '0x7f.1', '127.1', '127.0.0.1.']) {
      const lookupsBefore = systemLookups.length;
      const hitsBefore = hits.length;
      const agent = createEgressAgent(policyOf([{ destination: 'http://notation.test:PORT', addresses: ['127.0.0.0/8'] }]), async () => [answer]);
      try {
        const outcome = await send('request', agent, { url: `http://notation.test:${port}/notation` });
        const refusal = 'error' in outcome ? findEgressRefusal(outcome.error) : undefined;
        const secondLookups = systemLookups.slice(lookupsBefore);
        if ('status' in outcome && outcome.status === 200 && hits.length === hitsBefore + 1 && secondLookups.length === 0) outcomes.push(`${answer}: reached`);
        else if (refusal?.reason === 'unresolvable' && secondLookups.length === 0 && hits.length === hitsBefore) outcomes.push(`${answer}: refused`);
        else outcomes.push(`${answer}: ${'error' in outcome ? String(outcome.error) : `HTTP ${outcome.status}`}; system resolver asked for ${JSON.stringify(secondLookups)}`);
      } finally {
        await agent.close();
      }
    }
    assert.deepEqual(
      outcomes.filter((line) => !/: (reached|refused)$/.test(line)),
      [],
      'each answer must reach 127.0.0.1 directly or be refused as unresolvable',
    );
    assert.deepEqual(outcomes.slice(0, 2), ['127.0.0.1: reached', '::ffff:127.0.0.1: reached']);
  });
});
