import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { buildHttpRequest, compileHttpTemplate, type HttpRequestTemplate, type RawHttpTemplate } from '../../src/backends/http-request.ts';
import { WardenError } from '../../src/errors.ts';

const BASE = 'http://127.0.0.1:8080/api';

/** An input schema whose properties are the given names, the first `required` of them required. */
function schema(properties: readonly string[], required: readonly string[] = properties): Record<string, unknown> {
  return { type: 'object', properties: Object.fromEntries(properties.map((name) => [name, {}])), required: [...required] };
}

/** Asserts that compiling is refused at load (a plain Error, never a template). */
function refusesToCompile(raw: RawHttpTemplate, inputSchema: Record<string, unknown>, why: string): void {
  assert.throws(() => compileHttpTemplate(raw, inputSchema), (error: unknown) => error instanceof Error && !(error instanceof WardenError), why);
}

/** The code a build throws, or 'built'. Anything that is not a WardenError is rethrown: it must not happen. */
function buildOutcome(template: HttpRequestTemplate, args: Record<string, unknown>, base = BASE): string {
  try {
    buildHttpRequest(base, template, args);
    return 'built';
  } catch (error) {
    if (error instanceof WardenError) return error.code;
    throw error;
  }
}

const idTemplate = compileHttpTemplate({ method: 'GET', path: '/items/{id}' }, schema(['id']));

function pathFor(id: unknown): string {
  const built = buildHttpRequest(BASE, idTemplate, { id });
  return `${built.url.pathname}${built.url.search}`;
}

describe('compileHttpTemplate refuses a template that cannot mean what it says', () => {
  it('accepts a template using every position', () => {
    const template = compileHttpTemplate(
      { method: 'POST', path: '/items/{id}/notes', query: { q: '{q}', v: '2' }, headers: { 'X-Kind': 'kind-{kind}' }, body: { title: '{title}', fixed: 1 } },
      schema(['id', 'q', 'kind', 'title'], ['id']),
    );
    assert.equal(template.method, 'POST');
    assert.deepEqual(template.headers.map(([name]) => name), ['x-kind'], 'header names are kept in lower case');
  });

  it('a placeholder must name a property of the input schema (path, query, header, body)', () => {
    const props = schema(['id', 'q'], ['id']);
    const cases: [RawHttpTemplate, RawHttpTemplate][] = [
      [{ method: 'GET', path: '/items/{nope}' }, { method: 'GET', path: '/items/{id}' }],
      [{ method: 'GET', path: '/items', query: { q: '{nope}' } }, { method: 'GET', path: '/items', query: { q: '{q}' } }],
      [{ method: 'GET', path: '/items', headers: { 'X-Q': '{nope}' } }, { method: 'GET', path: '/items', headers: { 'X-Q': '{q}' } }],
      [{ method: 'POST', path: '/items', body: { deep: ['{nope}'] } }, { method: 'POST', path: '/items', body: { deep: ['{q}'] } }],
    ];
    for (const [bad, good] of cases) {
      refusesToCompile(bad, props, JSON.stringify(bad));
      assert.doesNotThrow(() => compileHttpTemplate(good, props), JSON.stringify(good));
    }
    refusesToCompile({ method: 'GET', path: '/items/{id}' }, { type: 'object' }, 'a schema without properties has no placeholders');
  });

  it('a path placeholder must be a required argument', () => {
    refusesToCompile({ method: 'GET', path: '/items/{id}' }, schema(['id'], []), 'optional');
    assert.doesNotThrow(() => compileHttpTemplate({ method: 'GET', path: '/items/{id}' }, schema(['id'], ['id'])));
  });

  it('a path has no query, fragment, empty or dot segment, and starts with /', () => {
    const props = schema(['id']);
    for (const path of ['/items?x=1', '/items/{id}?x', '/items#top', '/items/{id}#', '/items//{id}', '//evil.example/{id}', '/a/../{id}', '/a/./{id}', '/..', '/.', '/items/..', 'items/{id}', '/items\\{id}', '/ítems/{id}', '/items /{id}']) {
      refusesToCompile({ method: 'GET', path }, props, path);
    }
    assert.doesNotThrow(() => compileHttpTemplate({ method: 'GET', path: '/a.b/..c/{id}/x~y@z:1' }, props), 'dots inside a segment are fine');
  });

  it('a percent-encoded dot segment in the path is refused like a literal one (the URL parser decodes it)', () => {
    // new URL() treats %2e%2e and .%2E as "..": the request would go where the signed path does not say.
    for (const path of ['/public/%2e%2e/admin', '/public/%2E%2E/{id}', '/public/.%2e/{id}', '/public/%2e/{id}', '/%2e%2e/{id}']) {
      refusesToCompile({ method: 'GET', path }, schema(['id']), path);
    }
  });

  it('headers the request owns cannot be set, in any case', () => {
    for (const name of ['Host', 'HOST', 'Content-Length', 'content-length', 'Transfer-Encoding', 'Connection', 'Content-Type', 'TE', 'Expect', 'Upgrade', 'Proxy-Authorization', 'Accept-Encoding']) {
      refusesToCompile({ method: 'POST', path: '/items', headers: { [name]: 'x' } }, schema([]), name);
    }
    assert.doesNotThrow(() => compileHttpTemplate({ method: 'POST', path: '/items', headers: { 'X-Host': 'x' } }, schema([])));
  });

  it('a header literal must be printable ASCII', () => {
    for (const value of ['café', 'a\r\nX-Injected: 1', 'tab\there', 'nul\u0000', 'del\u007f', '\u2028']) {
      refusesToCompile({ method: 'GET', path: '/items', headers: { 'X-Note': value } }, schema([]), JSON.stringify(value));
    }
    assert.doesNotThrow(() => compileHttpTemplate({ method: 'GET', path: '/items', headers: { 'X-Note': 'plain text ~!' } }, schema([])));
  });

  it('a header set twice with names differing in case is refused', () => {
    refusesToCompile({ method: 'GET', path: '/items', headers: { 'X-Kind': 'a', 'x-kind': 'b' } }, schema([]), 'X-Kind twice');
    refusesToCompile({ method: 'GET', path: '/items', headers: { 'x-trace': 'a', 'X-TRACE': '{id}' } }, schema(['id']), 'X-TRACE twice');
  });

  it('a GET has no body; other methods may', () => {
    refusesToCompile({ method: 'GET', path: '/items', body: { a: 1 } }, schema([]), 'GET with body');
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE'] as const) {
      assert.doesNotThrow(() => compileHttpTemplate({ method, path: '/items', body: { a: 1 } }, schema([])), method);
    }
  });

  it('braces that do not enclose an argument name are refused, wherever they are', () => {
    const props = schema(['id']);
    for (const path of ['/items/{id', '/items/id}', '/items/{}', '/items/{bad name}', '/items/{{id}}', '/items/{id}}', '/items/{a/b}']) {
      refusesToCompile({ method: 'GET', path }, props, path);
    }
    refusesToCompile({ method: 'GET', path: '/items', query: { q: '{id' } }, props, 'query');
    refusesToCompile({ method: 'GET', path: '/items', query: { q: '}' } }, props, 'query }');
    refusesToCompile({ method: 'GET', path: '/items', headers: { 'X-A': '{ id }' } }, props, 'header');
  });
});

describe('buildHttpRequest encodes each argument for where it goes', () => {
  it('a path argument is one segment, percent-encoded whole', () => {
    assert.equal(pathFor('abc-123'), '/api/items/abc-123');
    assert.equal(pathFor('user@example.com'), '/api/items/user%40example.com');
    assert.equal(pathFor('a//b'), '/api/items/a%2F%2Fb');
    assert.equal(pathFor('group/project'), '/api/items/group%2Fproject');
    assert.equal(pathFor('%2f'), '/api/items/%252f');
    assert.equal(pathFor('%2e%2e'), '/api/items/%252e%252e');
    assert.equal(pathFor('?admin=1'), '/api/items/%3Fadmin%3D1');
    assert.equal(pathFor('#frag'), '/api/items/%23frag');
    assert.equal(pathFor('a\\b'), '/api/items/a%5Cb');
    assert.equal(pathFor('日本'), '/api/items/%E6%97%A5%E6%9C%AC');
    assert.equal(pathFor('😀'), '/api/items/%F0%9F%98%80');
    assert.equal(pathFor('...'), '/api/items/...');
    assert.equal(pathFor(42), '/api/items/42');
    assert.equal(pathFor(true), '/api/items/true');
  });

  it('a path argument that is empty, . or .. is refused', () => {
    for (const id of ['', '.', '..']) assert.equal(buildOutcome(idTemplate, { id }), 'WARDEN_ARGUMENTS_INVALID', JSON.stringify(id));
  });

  it('a path argument that would climb once a server decodes %2F (. or .. between slashes or backslashes) is refused', () => {
    // Encoded it stays one segment, but many servers decode %2F before resolving dot segments.
    for (const id of ['../../secret.txt', 'a/../../admin', 'a/..', './x', '..\\..', 'a\\..\\b', 'x/./y']) {
      assert.equal(buildOutcome(idTemplate, { id }), 'WARDEN_ARGUMENTS_INVALID', JSON.stringify(id));
    }
  });

  it('a % in a path template must start a complete escape: an argument cannot complete it into a dot segment', () => {
    refusesToCompile({ method: 'GET', path: '/v1/.%{v}/users' }, schema(['v']), 'a lone % before a placeholder');
    refusesToCompile({ method: 'GET', path: '/v1/100%' }, schema([]), 'a trailing %');
    assert.doesNotThrow(() => compileHttpTemplate({ method: 'GET', path: '/v1/a%20b/{v}' }, schema(['v'])));
  });

  it('a path argument that is not a scalar (object, array, null, non-finite number, absent) is refused', () => {
    for (const id of [{ a: 1 }, ['a'], null, Number.NaN, Number.POSITIVE_INFINITY, undefined]) {
      assert.equal(buildOutcome(idTemplate, { id }), 'WARDEN_ARGUMENTS_INVALID', String(id));
    }
  });

  it('a path argument holding a lone surrogate is refused as invalid arguments, not a crash', () => {
    // JSON can carry "\ud800"; encodeURIComponent throws a URIError on it.
    for (const id of ['\ud800', 'a\udc00b', '\udfff\ud800']) assert.equal(buildOutcome(idTemplate, { id }), 'WARDEN_ARGUMENTS_INVALID', JSON.stringify(id));
  });

  it('the base path is kept, with or without a trailing slash', () => {
    assert.equal(buildHttpRequest('http://127.0.0.1:8080/api/', idTemplate, { id: 'x' }).url.href, 'http://127.0.0.1:8080/api/items/x');
    assert.equal(buildHttpRequest('http://127.0.0.1:8080', idTemplate, { id: 'x' }).url.href, 'http://127.0.0.1:8080/items/x');
  });

  it('query values go through URLSearchParams; an absent argument leaves its parameter out; an array repeats it', () => {
    const template = compileHttpTemplate({ method: 'GET', path: '/search', query: { q: '{q}', tag: '{tags}', page: 'p{page}', v: '2' } }, schema(['q', 'tags', 'page'], []));
    const url = (args: Record<string, unknown>) => buildHttpRequest(BASE, template, args).url;
    assert.equal(url({}).search, '?v=2');
    assert.equal(url({ q: 'a b&c=d#e?f/g' }).searchParams.get('q'), 'a b&c=d#e?f/g');
    assert.equal(url({ q: 'a b&c=d#e' }).search, '?q=a+b%26c%3Dd%23e&v=2');
    assert.deepEqual(url({ tags: ['x', 'y&z', 3, false] }).searchParams.getAll('tag'), ['x', 'y&z', '3', 'false']);
    assert.deepEqual(url({ tags: [] }).searchParams.getAll('tag'), []);
    assert.equal(url({ page: 3 }).searchParams.get('page'), 'p3');
    assert.equal(url({ q: '日本' }).searchParams.get('q'), '日本');
    assert.equal(url({ q: '' }).search, '?q=&v=2');
    assert.equal(buildOutcome(template, { q: { a: 1 } }), 'WARDEN_ARGUMENTS_INVALID');
    assert.equal(buildOutcome(template, { tags: [['nested']] }), 'WARDEN_ARGUMENTS_INVALID');
    assert.equal(buildOutcome(template, { tags: [{ a: 1 }] }), 'WARDEN_ARGUMENTS_INVALID');
    assert.equal(buildOutcome(template, { page: [1, 2] }), 'WARDEN_ARGUMENTS_INVALID', 'an array only repeats a parameter that is a lone placeholder');
  });

  it('header values: from arguments, absent ones left out; CR, LF, NUL, other controls and non-ASCII refused', () => {
    const template = compileHttpTemplate({ method: 'GET', path: '/items', headers: { 'X-Kind': '{kind}', 'X-Trace': 'trace-{n}', 'X-Fixed': 'yes' } }, schema(['kind', 'n'], []));
    assert.deepEqual({ ...buildHttpRequest(BASE, template, { kind: 'widget', n: 7 }).headers }, { 'x-kind': 'widget', 'x-trace': 'trace-7', 'x-fixed': 'yes' });
    assert.deepEqual({ ...buildHttpRequest(BASE, template, {}).headers }, { 'x-fixed': 'yes' });
    assert.equal(buildHttpRequest(BASE, template, { kind: true }).headers['x-kind'], 'true');
    for (const kind of ['a\r\nX-Injected: 1', 'a\rb', 'a\nb', 'a\u0000b', 'a\tb', 'a\u007fb', 'café', 'a\u2028b', '\ud800', '\r\n\r\nGET / HTTP/1.1']) {
      assert.equal(buildOutcome(template, { kind }), 'WARDEN_ARGUMENTS_INVALID', JSON.stringify(kind));
    }
    for (const kind of [{ a: 1 }, ['a'], null]) assert.equal(buildOutcome(template, { kind }), 'WARDEN_ARGUMENTS_INVALID', JSON.stringify(kind));
  });

  it('the returned headers are a null-prototype record', () => {
    const template = compileHttpTemplate({ method: 'GET', path: '/items', headers: { 'X-Kind': '{kind}' } }, schema(['kind'], []));
    assert.equal(Object.getPrototypeOf(buildHttpRequest(BASE, template, { kind: 'a' }).headers), null);
  });

  it('body placeholders keep the argument JSON type; an absent one leaves its member out', () => {
    const template = compileHttpTemplate(
      { method: 'POST', path: '/items', body: { title: '{title}', count: '{count}', meta: '{meta}', list: ['{a}', 'lit', '{b}'], nested: { on: '{on}' }, text: 'not {title} a placeholder', fixed: 5, nothing: null } },
      schema(['title', 'count', 'meta', 'a', 'b', 'on'], []),
    );
    const full = buildHttpRequest(BASE, template, { title: 'T', count: 3, meta: { k: [1, { z: null }] }, a: [1, 2], b: false, on: 0 });
    assert.equal(full.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(full.body!), {
      title: 'T',
      count: 3,
      meta: { k: [1, { z: null }] },
      list: [[1, 2], 'lit', false],
      nested: { on: 0 },
      text: 'not {title} a placeholder',
      fixed: 5,
      nothing: null,
    });
    const sparse = buildHttpRequest(BASE, template, {});
    assert.deepEqual(JSON.parse(sparse.body!), { list: ['lit'], nested: {}, text: 'not {title} a placeholder', fixed: 5, nothing: null });
    assert.equal(buildHttpRequest(BASE, template, { title: null }).body!.includes('"title":null'), true, 'null is a value, not absent');
  });

  it('a body that is one placeholder is the argument itself; absent means no body at all', () => {
    const template = compileHttpTemplate({ method: 'PUT', path: '/items', body: '{doc}' }, schema(['doc'], []));
    assert.deepEqual(JSON.parse(buildHttpRequest(BASE, template, { doc: [1, 'two'] }).body!), [1, 'two']);
    const none = buildHttpRequest(BASE, template, {});
    assert.equal(none.body, undefined);
    assert.equal(none.headers['content-type'], undefined);
  });

  it('a __proto__ key in the body template stays a plain member', () => {
    const body = JSON.parse('{"__proto__": "{value}", "constructor": {"prototype": "{value}"}, "ok": 1}');
    const template = compileHttpTemplate({ method: 'POST', path: '/items', body }, schema(['value'], []));
    const built = buildHttpRequest(BASE, template, { value: { polluted: true } });
    const sent = JSON.parse(built.body!);
    assert.ok(Object.prototype.hasOwnProperty.call(sent, '__proto__'), 'sent as a member');
    assert.deepEqual(sent['__proto__'], { polluted: true });
    assert.deepEqual(sent['constructor'], { prototype: { polluted: true } });
    assert.match(built.body!, /"__proto__":\{"polluted":true\}/);
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined, 'no prototype was changed');
    assert.equal((Object.prototype as Record<string, unknown>)['polluted'], undefined);
  });

  it('the method is the template\'s', () => {
    for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const) {
      assert.equal(buildHttpRequest(BASE, compileHttpTemplate({ method, path: '/x' }, schema([])), {}).method, method);
    }
  });
});

describe('buildHttpRequest properties', () => {
  const template = compileHttpTemplate(
    { method: 'GET', path: '/items/{a}/sub/{b}', query: { q: '{c}', mix: 'x{c}y', r: '{b}' }, headers: { 'X-One': '{a}', 'X-Two': 'pre-{c}-post' } },
    schema(['a', 'b', 'c'], ['a', 'b']),
  );
  const bases = ['http://127.0.0.1:8080/api', 'https://api.example.com/v1/', 'http://[::1]:9000', 'https://api.example.com'];
  const nasty = fc.constantFrom('', '.', '..', '/', '//', '\\', '..\\', '%2e%2e', '%2f', '%2F..%2F', '?', '#', '@', ':', 'evil.example', '//evil.example/x', 'http://evil.example/', '\r\n', '\n', '\r', '\u0000', '\u2028', '\ud800', '\udc00', '😀', 'ü', ' ', '%', '%zz', '{a}', '\t');
  const text = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 24 }),
    fc.string({ unit: 'grapheme-ascii', maxLength: 24 }),
    fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code)), maxLength: 12 }),
    fc.array(nasty, { maxLength: 4 }).map((parts) => parts.join('')),
  );
  const value = fc.oneof(text, fc.double(), fc.integer(), fc.boolean());
  const args = fc.record({ a: value, b: value, c: fc.option(value, { nil: undefined }) }, { requiredKeys: ['a', 'b'] });

  it('every build either refuses (WARDEN_ARGUMENTS_INVALID) or stays on the base origin, under the base path', () => {
    fc.assert(
      fc.property(fc.constantFrom(...bases), args, (base, input) => {
        const origin = new URL(base).origin;
        const basePath = new URL(base).pathname.replace(/\/$/, '');
        let built;
        try {
          built = buildHttpRequest(base, template, input);
        } catch (error) {
          assert.ok(error instanceof WardenError, `not a WardenError: ${String(error)}`);
          assert.equal(error.code, 'WARDEN_ARGUMENTS_INVALID');
          return;
        }
        assert.equal(built.url.origin, origin);
        assert.equal(built.url.username, '');
        assert.equal(built.url.password, '');
        assert.equal(built.url.hash, '');
        assert.ok(built.url.pathname.startsWith(`${basePath}/items/`), built.url.pathname);
        // Exactly the template's segments: an argument is never more than one segment.
        assert.equal(built.url.pathname.slice(basePath.length).split('/').length, 5, built.url.pathname);
        assert.ok(!built.url.pathname.split('/').some((segment) => segment === '.' || segment === '..'), built.url.pathname);
      }),
      { numRuns: 2000 },
    );
  });

  it('no header value ever holds CR, LF or any other control character', () => {
    // Headers and query only: the path's own refusals do not hide what happens to headers.
    const headerTemplate = compileHttpTemplate(
      { method: 'POST', path: '/items', query: { q: '{c}' }, headers: { 'X-One': '{a}', 'X-Two': 'pre-{c}-post', 'X-Three': '{b}{a}' }, body: { b: '{b}' } },
      schema(['a', 'b', 'c'], []),
    );
    fc.assert(
      fc.property(args, (input) => {
        let built;
        try {
          built = buildHttpRequest(BASE, headerTemplate, input);
        } catch (error) {
          assert.ok(error instanceof WardenError, `not a WardenError: ${String(error)}`);
          assert.equal(error.code, 'WARDEN_ARGUMENTS_INVALID');
          return;
        }
        for (const [name, headerValue] of Object.entries(built.headers)) {
          assert.ok(!/[\r\n]/.test(headerValue), name);
          assert.match(headerValue, /^[\x20-\x7e]*$/, name);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('a path-only template: a string argument is refused or round-trips exactly through one segment', () => {
    fc.assert(
      fc.property(text, (id) => {
        const outcome = buildOutcome(idTemplate, { id });
        if (outcome !== 'built') return;
        const built = buildHttpRequest(BASE, idTemplate, { id });
        assert.ok(built.url.pathname.startsWith('/api/items/'));
        assert.equal(decodeURIComponent(built.url.pathname.slice('/api/items/'.length)), id);
        assert.equal(built.url.search, '');
      }),
      { numRuns: 2000 },
    );
  });
});
