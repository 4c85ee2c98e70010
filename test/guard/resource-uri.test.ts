import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileUriPattern, MAX_RESOURCE_URI, resourceUriProblem, templateExample } from '../../src/guard/resource-uri.ts';

/** URIs the broker may match against grants. */
const ACCEPTED = [
  'file:///srv/docs/readme.md',
  'demo://resource/static/document/architecture.md',
  'demo://resource/dynamic/text/3',
  'https://example.com/a/b?c=d#e',
  'urn:isbn:0451450523',
  'mailto:someone@example.com',
  'x:',
  'a+b.c-d:rest',
  'file:///srv/docs/.hidden', // a dot file is not a dot segment
  'file:///srv/docs/a..b', // nor is a name with two dots in it
  'file:///srv/docs/...', // three dots are a name
  'file:///srv/docs/%20space-encoded',
  'file:///srv/docs/%41%42', // other escapes are fine
  'file:///srv/caf\u00e9.txt', // visible non-ASCII
  'https://example.com/search?q=../x', // dots in the query are not path segments
  'https://example.com/page#frag',
  `file:///${'a'.repeat(MAX_RESOURCE_URI - 'file:///'.length)}`, // exactly the longest
];

/** URIs refused before any grant is tried, each for the reason named. */
const REFUSED: readonly (readonly [string, unknown])[] = [
  ['empty', ''],
  ['not a string', 42],
  ['not a string', undefined],
  ['not a string', null],
  ['not a string', { uri: 'file:///x' }],
  ['not a string', ['file:///x']],
  ['too long', `file:///${'a'.repeat(MAX_RESOURCE_URI)}`],
  ['too long (3000)', `file:///${'a'.repeat(3000)}`],
  ['no scheme', 'nope'],
  ['no scheme', '/etc/passwd'],
  ['no scheme', '//host/path'],
  ['no scheme', '1http://x'],
  ['no scheme', ':x'],
  ['dot-dot', 'file:///srv/docs/../../etc/passwd'],
  ['dot-dot at the end', 'file:///srv/docs/..'],
  ['dot-dot right after the scheme', 'notes:../secret'],
  ['dot-dot as the whole path', 'file:..'],
  ['dot right after the scheme', 'file:./x'],
  ['dot', 'file:///srv/docs/./x'],
  ['dot at the end', 'file:///srv/docs/.'],
  ['dot-dot with a query after', 'file:///srv/docs/..?x'],
  ['dot-dot with a fragment after', 'file:///srv/docs/..#x'],
  ['encoded dots', 'file:///srv/docs/%2E%2e/etc/passwd'],
  ['encoded dot lower', 'file:///srv/docs/%2e%2e/x'],
  ['mixed encoded dot', 'file:///srv/docs/.%2E/x'],
  ['encoded slash', 'file:///srv/docs/..%2fetc'],
  ['encoded slash upper', 'file:///srv/docs/a%2Fb'],
  ['encoded backslash', 'file:///srv/docs/%5c..%5cx'],
  ['encoded backslash upper', 'file:///srv/docs/%5Cx'],
  ['backslash', 'file:///srv/docs/..\\..\\x'],
  ['backslash alone', 'file:///srv/docs\\x'],
  ['NUL', 'file:///srv/docs/a\u0000.md'],
  ['newline', 'file:///srv/docs/a\n.md'],
  ['carriage return', 'file:///srv/docs/a\r.md'],
  ['tab', 'file:///srv/docs/a\t.md'],
  ['space', 'file:///srv/docs/a b.md'],
  ['DEL', 'file:///srv/docs/a\u007f'],
  ['C1 control', 'file:///srv/docs/a\u0085'],
  ['ESC', 'file:///srv/docs/\u001b[31m'],
  ['zero-width space', 'file:///srv/docs/a\u200b.md'],
  ['zero-width joiner', 'file:///srv/docs/a\u200d.md'],
  ['bidi override', 'file:///srv/docs/\u202etxt.exe'],
  ['BOM', '\ufefffile:///srv/docs/a'],
  ['tag character', 'file:///srv/docs/a\u{e0041}'],
  ['soft hyphen', 'file:///srv/docs/a\u00ad'],
  ['line separator', 'file:///srv/docs/a\u2028'],
  ['word joiner', 'file:///srv/docs/a\u2060'],
  ['dots encoded twice', 'file:///srv/docs/%252e%252e/etc/passwd'],
  ['slash encoded twice', 'file:///srv/docs/..%252fetc'],
  ['encoded NUL', 'file:///srv/docs/a%00.md'],
  ['dot-dot with a segment parameter', 'https://host/docs/..;x/admin'],
  ['dot with a segment parameter', 'https://host/docs/.;x/a'],
  ['fullwidth dots', 'file:///srv/docs/\uff0e\uff0e/etc'],
  ['one dot leader', 'file:///srv/docs/\u2024\u2024/etc'],
  ['two dot leader (NFKC: ..)', 'file:///srv/docs/\u2025/\u2025/etc/passwd'],
  ['fullwidth slashes (NFKC: /)', 'file:///srv/docs/..\uff0f..\uff0fetc\uff0fpasswd'],
  ['dot-dot after a question mark, for a {+path} server', 'file:///srv/docs/x?/../../../etc/passwd'],
  ['dot-dot after a hash', 'file:///srv/docs/x#/../../etc/passwd'],
  ['dot-dot in the fragment', 'https://example.com/page#../frag'],
  ['empty segment', 'file:///srv/docs//etc/passwd'],
  ['user information', 'https://a@evil.com/x'],
];

describe('resourceUriProblem', () => {
  for (const uri of ACCEPTED) {
    it(`accepts ${JSON.stringify(uri.length > 60 ? `${uri.slice(0, 40)}...(${uri.length})` : uri)}`, () => {
      assert.equal(resourceUriProblem(uri), undefined);
    });
  }

  it('refuses every hostile or malformed URI in the table, each with a reason', () => {
    for (const [label, uri] of REFUSED) {
      const problem = resourceUriProblem(uri);
      assert.equal(typeof problem, 'string', `${label}: ${JSON.stringify(uri)?.slice(0, 80)} was accepted`);
      assert.ok(problem!.length > 0, label);
    }
  });

  it('a refused URI is never quoted back in the reason (it may hold anything)', () => {
    for (const [label, uri] of REFUSED) {
      if (typeof uri !== 'string' || uri.length < 12) continue;
      assert.ok(!resourceUriProblem(uri)!.includes(uri), label);
    }
  });

  it('the length limit is on characters, at exactly MAX_RESOURCE_URI', () => {
    const base = 'file:///';
    assert.equal(resourceUriProblem(base + 'a'.repeat(MAX_RESOURCE_URI - base.length)), undefined);
    assert.notEqual(resourceUriProblem(base + 'a'.repeat(MAX_RESOURCE_URI - base.length + 1)), undefined);
  });

  it('never throws, and whatever it accepts has a scheme, no dot segment, no control, backslash or encoded separator (property)', () => {
    const piece = fc.constantFrom('file:', '//', '/', '.', '..', ';', '%2e', '%2E', '%2f', '%5c', '%25', '%41', '%00', '\\', '\u0000', '\u200b', '\uff0e', '\u2025', '\uff0f', '@', ' ', 'a', 'b', '?', '#', ':', 'é', '\u{e0041}');
    const uri = fc.oneof(fc.array(piece, { maxLength: 16 }).map((parts) => parts.join('')), fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }));
    fc.assert(
      fc.property(uri, (candidate) => {
        const problem = resourceUriProblem(candidate);
        if (problem !== undefined) return;
        // The spelling accepted, and the one a normalising (NFKC) server would read.
        for (const spelling of [candidate, candidate.normalize('NFKC')]) {
          assert.match(spelling, /^[A-Za-z][A-Za-z0-9+.-]*:/);
          // eslint-disable-next-line no-control-regex
          assert.ok(!/[\u0000-\u0020\u007f-\u009f\\\u200b\u{e0041}]/u.test(spelling), JSON.stringify(candidate));
          assert.ok(!/%(25)*(2e|2f|5c|00)/i.test(spelling), candidate);
          const rest = spelling.replace(/^[A-Za-z][A-Za-z0-9+.-]*:/, '').replace(/^\/\/[^/?#]*/, '');
          assert.ok(!rest.split(/[/?#]/).some((segment) => ['.', '..'].includes(segment.split(';')[0]!)), candidate);
          assert.ok(!rest.includes('//'), candidate);
        }
      }),
      { numRuns: 3000 },
    );
  });
});

/** The reference: a regular expression, * as [^/]*, ** (or more stars) as any run, the rest literal. */
function reference(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === '*') {
      if (pattern[i + 1] === '*') {
        while (pattern[i + 1] === '*') i++;
        source += '[\\s\\S]*';
      } else source += '[^/]*';
    } else source += pattern[i]!.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

describe('compileUriPattern', () => {
  it('* stays within one path segment; ** crosses segments', () => {
    const one = compileUriPattern('file:///srv/docs/*');
    assert.ok(one('file:///srv/docs/a.md'));
    assert.ok(one('file:///srv/docs/'));
    assert.ok(!one('file:///srv/docs/sub/a.md'));
    assert.ok(!one('file:///srv/docsX/a.md'));
    assert.ok(!one('file:///srv/doc'));
    const all = compileUriPattern('file:///srv/docs/**');
    assert.ok(all('file:///srv/docs/a.md'));
    assert.ok(all('file:///srv/docs/sub/deeper/a.md'));
    assert.ok(all('file:///srv/docs/'));
    assert.ok(!all('file:///srv/other/a.md'));
    assert.ok(!all('file:///srv/docs'));
  });

  it('** in the middle: any run, including none and slashes', () => {
    const matcher = compileUriPattern('file:///srv/**/index.md');
    assert.ok(matcher('file:///srv/a/index.md'));
    assert.ok(matcher('file:///srv/a/b/c/index.md'));
    assert.ok(matcher('file:///srv//index.md'));
    assert.ok(!matcher('file:///srv/a/index.mdx'));
  });

  it('three or more stars are one **', () => {
    assert.ok(compileUriPattern('a:***')('a:x/y/z'));
    assert.ok(compileUriPattern('a:x/****/z')('a:x/1/2/3/z'));
  });

  it('? is the query mark, not a wildcard', () => {
    const matcher = compileUriPattern('https://api.example.com/items?id=*');
    assert.ok(matcher('https://api.example.com/items?id=42'));
    assert.ok(!matcher('https://api.example.com/itemsXid=42'));
    assert.ok(!matcher('https://api.example.com/items?id=4/2'));
    const literal = compileUriPattern('a:b?c');
    assert.ok(literal('a:b?c'));
    assert.ok(!literal('a:bxc'));
    assert.ok(!literal('a:bc'));
  });

  it('every other character is literal: regular-expression characters mean nothing', () => {
    for (const pattern of ['a:x.y', 'a:(x)', 'a:[x]', 'a:x+', 'a:^x$', 'a:x|y', 'a:{x}']) {
      assert.ok(compileUriPattern(pattern)(pattern), pattern);
    }
    assert.ok(!compileUriPattern('a:x.y')('a:xzy'));
    assert.ok(!compileUriPattern('a:x|y')('a:x'));
    assert.ok(!compileUriPattern('a:[x]')('a:x'));
  });

  it('matches case-sensitively', () => {
    assert.ok(!compileUriPattern('file:///Docs/*')('file:///docs/a'));
  });

  it('the empty pattern matches only the empty string', () => {
    assert.ok(compileUriPattern('')(''));
    assert.ok(!compileUriPattern('')('a:b'));
  });

  it('agrees with a reference regular expression on random short patterns and URIs (property)', () => {
    const pattern = fc.array(fc.constantFrom('a', 'b', '/', '*', '?', '.'), { maxLength: 10 }).map((parts) => parts.join(''));
    const uri = fc.array(fc.constantFrom('a', 'b', '/', '?', '.'), { maxLength: 12 }).map((parts) => parts.join(''));
    fc.assert(
      fc.property(pattern, uri, (p, u) => {
        assert.equal(compileUriPattern(p)(u), reference(p).test(u), `${JSON.stringify(p)} ~ ${JSON.stringify(u)}`);
      }),
      { numRuns: 5000 },
    );
  });

  it('never throws on any pattern or URI, including astral and control characters (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 30 }), fc.string({ unit: 'binary', maxLength: 60 }), (p, u) => {
        assert.equal(typeof compileUriPattern(p)(u), 'boolean');
      }),
      { numRuns: 2000 },
    );
  });

  it('a literal pattern (no star) matches exactly itself (property)', () => {
    const literal = fc.string({ minLength: 1, maxLength: 30 }).filter((s) => !s.includes('*'));
    fc.assert(
      fc.property(literal, literal, (p, other) => {
        const matcher = compileUriPattern(p);
        assert.ok(matcher(p));
        assert.equal(matcher(other), other === p);
      }),
      { numRuns: 1000 },
    );
  });

  it('a pathological pattern on a long URI finishes (bounded work, no backtracking)', () => {
    const uri = `a:${'a'.repeat(MAX_RESOURCE_URI - 2)}`;
    assert.equal(compileUriPattern('**a**a**a**a**b')(uri), false);
    assert.equal(compileUriPattern('**a**a**a**a**b')(`${uri.slice(0, -1)}b`), true);
    assert.equal(compileUriPattern(`${'*a'.repeat(40)}b`)(uri), false);
    // A pattern as long as the config allows, against a URI as long as the broker reads.
    const long = `a:${'*a'.repeat(1000)}`;
    assert.equal(typeof compileUriPattern(long)(uri), 'boolean');
  });
});

describe('a template judged by its filled-in form', () => {
  const covers = (pattern: string, template: string) => compileUriPattern(pattern)(templateExample(template)!);
  it('a template whose filled-in form a grant covers is listed', () => {
    assert.ok(covers('demo://resource/dynamic/text/*', 'demo://resource/dynamic/text/{resourceId}'));
    assert.ok(covers('file:///srv/**', 'file:///srv/{+path}'));
    assert.ok(covers('file:///srv/*/*', 'file:///srv/{a}/{b}'));
  });

  it('a template outside the grant is not', () => {
    assert.ok(!covers('demo://resource/dynamic/text/*', 'demo://resource/dynamic/blob/{resourceId}'));
    assert.ok(!covers('file:///srv/docs/*', 'file:///{+path}'));
  });
});

describe('templateExample', () => {
  it('fills each expression with one value', () => {
    assert.equal(templateExample('file:///srv/{+path}/v{n}'), 'file:///srv/x/vx');
  });

  it('a template longer than a URI may be is not filled in at all', () => {
    assert.equal(templateExample(`a:${'{'.repeat(MAX_RESOURCE_URI)}`), undefined);
  });

  it('unclosed braces are scanned once, not once per brace (bounded input)', () => {
    // With /\{[^}]*\}/ this string took time proportional to its length squared.
    const hostile = `a:${'{'.repeat(MAX_RESOURCE_URI - 2)}`;
    assert.equal(templateExample(hostile), hostile);
    assert.equal(templateExample('a:{{x}'), 'a:{x');
  });
});

