import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyPreload, isNodeExecutable, nodeModuleArguments } from '../../src/manifest/node-arguments.ts';

describe('isNodeExecutable', () => {
  it('is true for a file named node or nodejs, or the broker\'s own Node, whichever path says so', () => {
    assert.equal(isNodeExecutable(['/usr/bin/node'], '/opt/node/bin/node'), true);
    assert.equal(isNodeExecutable(['/usr/bin/nodejs'], '/opt/node/bin/node'), true);
    assert.equal(isNodeExecutable(['/srv/bin/run', '/opt/node/bin/node'], '/opt/node/bin/node'), true);
    assert.equal(isNodeExecutable(['/srv/bin/tool', '/opt/x/real'], '/opt/x/real'), true, 'the broker\'s own Node, whatever its name');
    assert.equal(isNodeExecutable(['/bin/sh'], '/opt/node/bin/node'), false);
    assert.equal(isNodeExecutable(['/usr/bin/node-gyp', '/usr/bin/nodemon'], '/opt/node/bin/node'), false);
  });
});

describe('nodeModuleArguments', () => {
  it('takes every plain argument, and each preload option\'s value, separate or after "="', () => {
    assert.deepEqual(nodeModuleArguments(['--no-warnings', '-r', './setup', '--import=tsx', '--loader', 'ts-node/esm', '--experimental-loader=./l.mjs', '--require=dotenv/config', 'server', 'stdio']), [
      { arg: './setup', specifier: './setup', preload: true },
      { arg: './setup', specifier: './setup', preload: false },
      { arg: '--import=tsx', specifier: 'tsx', preload: true },
      { arg: 'ts-node/esm', specifier: 'ts-node/esm', preload: true },
      { arg: 'ts-node/esm', specifier: 'ts-node/esm', preload: false },
      { arg: '--experimental-loader=./l.mjs', specifier: './l.mjs', preload: true },
      { arg: '--require=dotenv/config', specifier: 'dotenv/config', preload: true },
      { arg: 'server', specifier: 'server', preload: false },
      { arg: 'stdio', specifier: 'stdio', preload: false },
    ]);
  });

  it('after "--", every argument is plain, even one starting with "-"; a preload option without a value names nothing', () => {
    assert.deepEqual(nodeModuleArguments(['--', '-weird', '-r']), [
      { arg: '-weird', specifier: '-weird', preload: false },
      { arg: '-r', specifier: '-r', preload: false },
    ]);
    assert.deepEqual(nodeModuleArguments(['-r']), []);
    // Other options and their "=" values are not modules.
    assert.deepEqual(nodeModuleArguments(['--title=x', '--input-type=module', '-e']), []);
  });
});

describe('classifyPreload', () => {
  it('reads paths, file: URLs, built-ins, data: URLs and package names as Node does', () => {
    assert.deepEqual(classifyPreload('./setup'), { kind: 'path', path: './setup' });
    assert.deepEqual(classifyPreload('../x.js'), { kind: 'path', path: '../x.js' });
    assert.deepEqual(classifyPreload('/abs/x.js'), { kind: 'path', path: '/abs/x.js' });
    assert.deepEqual(classifyPreload('.'), { kind: 'path', path: '.' });
    assert.deepEqual(classifyPreload('file:///srv/hook.mjs'), { kind: 'url' });
    assert.deepEqual(classifyPreload('node:fs'), { kind: 'builtin' });
    assert.deepEqual(classifyPreload('data:text/javascript,1'), { kind: 'builtin' });
    assert.deepEqual(classifyPreload('dotenv/config'), { kind: 'package', name: 'dotenv' });
    assert.deepEqual(classifyPreload('tsx'), { kind: 'package', name: 'tsx' });
    assert.deepEqual(classifyPreload('@scope/pkg/register.js'), { kind: 'package', name: '@scope/pkg' });
  });

  it('leaves to refusal what it cannot place: other URLs, "#" imports, malformed names', () => {
    for (const specifier of ['https://example.test/x.mjs', 'http:x', '#internal', '@scope', 'a\\b']) {
      assert.equal(classifyPreload(specifier).kind, 'unknown', specifier);
    }
  });
});
