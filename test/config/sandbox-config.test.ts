import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DEFAULTS, loadConfig } from '../../src/config/load.ts';
import { formatEnvelope } from '../../src/manifest/envelope.ts';
import { signManifestSource } from '../../src/manifest/sign.ts';
import { NOTES_SERVER, NOTES_TOOLS, stdioManifest, TEST_PUBLISHER, tempDir, writeConfig, writeManifest, writeYaml, expectWardenError as expectCode } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-sandbox-config-');
after(cleanup);
let counter = 0;

writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));

const RUN_CODE = 'warden__run_code';
const LIMIT_NAMES = ['memoryMb', 'cpuMs', 'wallMs', 'inputBytes', 'outputBytes', 'consoleBytes'] as const;
const DEFAULT_LIMITS = { memoryMb: 64, cpuMs: 1000, wallMs: 30_000, inputBytes: 1_048_576, outputBytes: 65_536, consoleBytes: 65_536 };

function baseConfig(extra: Record<string, unknown> = {}): Record<string, any> {
  return {
    version: 1,
    servers: { notes: { manifest: 'notes.json' } },
    agents: { alice: { allow: [{ tools: ['notes__*'] }] } },
    ...extra,
  };
}

function configFile(data: string | Record<string, unknown>): string {
  const file = join(dir, `config-${counter++}.yaml`);
  return typeof data === 'string' ? writeYaml(file, data) : writeConfig(file, data);
}

const withSandbox = (sandbox: unknown) => loadConfig(configFile(baseConfig({ sandbox })));

describe('config sandbox section: defaults', () => {
  it('has every default when the section is absent', () => {
    const config = loadConfig(configFile(baseConfig()));
    // One worker per CPU, at most 8 by default.
    const cpus = Math.min(availableParallelism(), 8);
    assert.deepEqual(config.sandbox, {
      workers: cpus,
      warmIsolates: 2,
      workerMemoryMb: 512,
      limits: DEFAULT_LIMITS,
      maxLimits: DEFAULT_LIMITS,
      codeMode: { workers: cpus, maxCalls: 50, concurrency: 4 },
    });
    assert.deepEqual(DEFAULTS.sandboxLimits, DEFAULT_LIMITS);
  });

  it('an empty section, and empty subsections, are the defaults too', () => {
    const absent = loadConfig(configFile(baseConfig())).sandbox;
    assert.deepEqual(withSandbox({}).sandbox, absent);
    assert.deepEqual(withSandbox({ limits: {}, maxLimits: {}, codeMode: {} }).sandbox, absent);
  });

  it('is frozen with the rest of the config', () => {
    const config = loadConfig(configFile(baseConfig()));
    assert.throws(() => {
      (config.sandbox.limits as { cpuMs: number }).cpuMs = 10 ** 9;
    }, TypeError);
    assert.throws(() => {
      (config.sandbox.codeMode as { maxCalls: number }).maxCalls = 10 ** 9;
    }, TypeError);
  });
});

describe('config sandbox section: overrides', () => {
  it('takes every setting it is given', () => {
    const sandbox = {
      workers: 3,
      warmIsolates: 0,
      workerMemoryMb: 1024,
      limits: { memoryMb: 128, cpuMs: 2000, wallMs: 5000, inputBytes: 4096, outputBytes: 8192, consoleBytes: 0 },
      maxLimits: { memoryMb: 256, cpuMs: 10_000, wallMs: 60_000, inputBytes: 1_000_000, outputBytes: 100_000, consoleBytes: 10 },
      codeMode: { workers: 1, maxCalls: 7, concurrency: 2 },
    };
    assert.deepEqual(withSandbox(sandbox).sandbox, sandbox);
  });

  it('accepts the schema\'s edges', () => {
    const low = { workers: 1, warmIsolates: 0, workerMemoryMb: 64, limits: { memoryMb: 8, cpuMs: 1, wallMs: 1, inputBytes: 2, outputBytes: 4, consoleBytes: 0 }, codeMode: { workers: 1, maxCalls: 1, concurrency: 1 } };
    const config = withSandbox(low);
    assert.deepEqual(config.sandbox.limits, low.limits);
    assert.deepEqual(config.sandbox.maxLimits, low.limits);
    const highLimits = { memoryMb: 4096, cpuMs: 3_600_000, wallMs: 3_600_000, inputBytes: 67_108_864, outputBytes: 67_108_864, consoleBytes: 67_108_864 };
    const high = { workers: 256, warmIsolates: 16, workerMemoryMb: 65_536, limits: highLimits, maxLimits: highLimits, codeMode: { workers: 256, maxCalls: 10_000, concurrency: 256 } };
    assert.deepEqual(withSandbox(high).sandbox, high);
  });

  it('maxLimits default per field to the limit in force', () => {
    const config = withSandbox({ limits: { cpuMs: 5000, wallMs: 100 }, maxLimits: { memoryMb: 256 } });
    assert.deepEqual(config.sandbox.limits, { ...DEFAULT_LIMITS, cpuMs: 5000, wallMs: 100 });
    assert.deepEqual(config.sandbox.maxLimits, { ...DEFAULT_LIMITS, cpuMs: 5000, wallMs: 100, memoryMb: 256 });
  });

  it('a limit equal to its maximum is fine', () => {
    const config = withSandbox({ limits: { cpuMs: 1500 }, maxLimits: { cpuMs: 1500 } });
    assert.equal(config.sandbox.limits.cpuMs, 1500);
    assert.equal(config.sandbox.maxLimits.cpuMs, 1500);
  });

  it('the run_code tool\'s timeout follows limits.wallMs', () => {
    const config = loadConfig(configFile(baseConfig({ sandbox: { limits: { wallMs: 1234 } }, agents: { alice: { allow: [{ tools: [RUN_CODE] }] } } })));
    assert.equal(config.catalog.get(RUN_CODE)?.tool.timeoutMs, 1234);
  });
});

describe('config sandbox section: refusals', () => {
  it('a limit above its maximum is WARDEN_CONFIG_INVALID naming /sandbox/limits/<name>', () => {
    for (const name of LIMIT_NAMES) {
      const limit = DEFAULT_LIMITS[name] + 1;
      expectCode(() => withSandbox({ limits: { [name]: limit }, maxLimits: { [name]: DEFAULT_LIMITS[name] } }), 'WARDEN_CONFIG_INVALID', new RegExp(`/sandbox/limits/${name}\\b`));
    }
  });

  it('a maximum below a default limit is refused too (the default is the limit then)', () => {
    expectCode(() => withSandbox({ maxLimits: { memoryMb: 32 } }), 'WARDEN_CONFIG_INVALID', /\/sandbox\/limits\/memoryMb\b/);
    expectCode(() => withSandbox({ maxLimits: { consoleBytes: 0 } }), 'WARDEN_CONFIG_INVALID', /\/sandbox\/limits\/consoleBytes\b/);
  });

  it('unknown keys at every level are refused', () => {
    const cases: unknown[] = [
      { threads: 4 },
      { limits: { memoryMB: 64 } },
      { limits: { networkAccess: true } },
      { maxLimits: { cpu: 1 } },
      { codeMode: { enabled: true } },
      { codeMode: { maxcalls: 5 } },
    ];
    for (const sandbox of cases) expectCode(() => withSandbox(sandbox), 'WARDEN_CONFIG_INVALID', undefined);
    // Written as YAML text: a __proto__ key is a key like any other, and unknown.
    for (const where of ['sandbox', 'sandbox.limits', 'sandbox.codeMode']) {
      const nested = where === 'sandbox' ? '  __proto__:\n    workers: 1\n' : `  ${where.split('.')[1]}:\n    __proto__:\n      cpuMs: 1\n`;
      const text = `version: 1\nservers: {}\nagents: {}\nsandbox:\n${nested}`;
      expectCode(() => loadConfig(configFile(text)), 'WARDEN_CONFIG_INVALID', undefined);
    }
  });

  it('wrong types are refused', () => {
    const cases: unknown[] = [
      null,
      [],
      'fast',
      42,
      { workers: '2' },
      { workers: 1.5 },
      { workers: true },
      { warmIsolates: null },
      { workerMemoryMb: [512] },
      { limits: null },
      { limits: [] },
      { limits: { cpuMs: '1000' } },
      { limits: { wallMs: 2.5 } },
      { maxLimits: 'unbounded' },
      { codeMode: null },
      { codeMode: { concurrency: '4' } },
      { codeMode: { maxCalls: 1e-3 } },
    ];
    for (const sandbox of cases) expectCode(() => withSandbox(sandbox), 'WARDEN_CONFIG_INVALID', undefined);
  });

  it('negative, zero and huge values are refused', () => {
    const cases: unknown[] = [
      { workers: 0 },
      { workers: -1 },
      { workers: 257 },
      { warmIsolates: -1 },
      { warmIsolates: 17 },
      { workerMemoryMb: 0 },
      { workerMemoryMb: 63 },
      { workerMemoryMb: 65_537 },
      { limits: { memoryMb: 0 } },
      { limits: { memoryMb: 7 } },
      { limits: { memoryMb: 4097 } },
      { limits: { cpuMs: 0 } },
      { limits: { cpuMs: -1000 } },
      { limits: { cpuMs: 3_600_001 } },
      { limits: { wallMs: 0 } },
      { limits: { wallMs: Number.MAX_SAFE_INTEGER } },
      { limits: { inputBytes: 1 } },
      { limits: { inputBytes: 67_108_865 } },
      { limits: { outputBytes: 3 } },
      { limits: { outputBytes: 2 ** 53 } },
      { limits: { consoleBytes: -1 } },
      { limits: { consoleBytes: 67_108_865 } },
      { maxLimits: { memoryMb: 1e9 } },
      { maxLimits: { cpuMs: 0 } },
      { maxLimits: { consoleBytes: -1 } },
      { codeMode: { workers: 0 } },
      { codeMode: { workers: 257 } },
      { codeMode: { maxCalls: 0 } },
      { codeMode: { maxCalls: 10_001 } },
      { codeMode: { concurrency: 0 } },
      { codeMode: { concurrency: -4 } },
      { codeMode: { concurrency: 257 } },
    ];
    for (const sandbox of cases) expectCode(() => withSandbox(sandbox), 'WARDEN_CONFIG_INVALID', undefined);
  });

  it('YAML spellings of infinity and not-a-number are refused', () => {
    for (const value of ['.inf', '-.inf', '.nan', '1e400']) {
      const text = `version: 1\nservers: {}\nagents: {}\nsandbox:\n  limits:\n    cpuMs: ${value}\n`;
      expectCode(() => loadConfig(configFile(text)), 'WARDEN_CONFIG_INVALID', undefined);
    }
  });
});

describe('config: the reserved server key warden', () => {
  it('a server keyed warden is WARDEN_CONFIG_INVALID, enabled or not', () => {
    for (const entry of [{ manifest: 'notes.json' }, { manifest: 'notes.json', enabled: false }, { manifest: 'missing.json' }]) {
      const data = baseConfig();
      data['servers'] = { notes: { manifest: 'notes.json' }, warden: entry };
      expectCode(() => loadConfig(configFile(data)), 'WARDEN_CONFIG_INVALID', /\/servers\/warden\b/);
    }
  });

  it('keys that only resemble it are ordinary servers', () => {
    const data = baseConfig();
    data['servers'] = { 'warden-tools': { manifest: 'notes.json' }, wardens: { manifest: 'notes.json', enabled: false } };
    data['agents'] = { alice: { allow: [{ tools: ['*'] }] } };
    const config = loadConfig(configFile(data));
    assert.ok(config.servers.has('warden-tools'));
    assert.ok(config.catalog.has('warden-tools__list_notes'));
  });
});

describe('config: warden__run_code in the catalog and the grant warnings', () => {
  it('an exact grant gives the catalog warden__run_code, a read tool, and no "matches no tool" warning', () => {
    const data = baseConfig();
    data['agents'] = { alice: { allow: [{ tools: ['notes__*'] }, { tools: [RUN_CODE] }] } };
    const config = loadConfig(configFile(data));
    const tool = config.catalog.get(RUN_CODE);
    assert.ok(tool, 'warden__run_code is in the catalog');
    assert.equal(tool.tool.access, 'read');
    assert.equal(tool.server, 'warden');
    assert.equal(tool.definition.name, RUN_CODE);
    assert.equal(tool.definition.annotations.readOnlyHint, true);
    assert.equal(tool.definition.annotations.destructiveHint, false);
    assert.deepEqual(config.warnings, []);
  });

  it('is there with no servers at all, for an agent granted only it', () => {
    const config = loadConfig(configFile({ version: 1, servers: {}, agents: { coder: { allow: [{ tools: [RUN_CODE], access: ['read'] }] } } }));
    assert.equal(config.catalog.get(RUN_CODE)?.tool.access, 'read');
    assert.ok(!config.warnings.some((warning) => warning.includes(RUN_CODE)), config.warnings.join('\n'));
  });

  it('wildcard grants that can only mean the broker\'s own tools match no tool, and say so', () => {
    const data = baseConfig();
    data['agents'] = { alice: { allow: [{ tools: [RUN_CODE] }, { tools: ['warden__*', 'w?rden__run_code', '*run_code', 'warden__run_cod?'] }] } };
    const config = loadConfig(configFile(data));
    for (const pattern of ['warden__*', 'w?rden__run_code', '*run_code', 'warden__run_cod?']) {
      assert.ok(config.warnings.some((warning) => warning.includes(`"${pattern}" matches no tool`)), `${pattern}: ${config.warnings.join('\n')}`);
    }
    assert.ok(!config.warnings.some((warning) => warning.includes(`"${RUN_CODE}" matches no tool`)));
  });

  it('without an exact grant, no agent\'s grants reach warden__run_code, whatever their wildcards', () => {
    const data = baseConfig();
    data['agents'] = { alice: { allow: [{ tools: ['*'], access: ['read', 'write', 'destructive'] }] }, bob: { allow: [{ tools: ['warden__*', '*run_code', 'w?rden__run_code'] }] } };
    const config = loadConfig(configFile(data));
    for (const agent of config.agents.values()) {
      for (const grant of agent.grants) assert.ok(!grant.matchers.some((matcher) => matcher(RUN_CODE)), `${agent.name}: ${grant.patterns.join(',')}`);
    }
  });

  it('the run_code tool validates its own input: code is a non-empty string, nothing else', () => {
    const config = loadConfig(configFile(baseConfig({ agents: { alice: { allow: [{ tools: [RUN_CODE] }] } } })));
    const validate = config.catalog.get(RUN_CODE)!.validateArguments;
    const ok = (args: unknown) => validate(args) === true;
    assert.ok(ok({ code: 'return 1;' }));
    for (const bad of [{}, { code: '' }, { code: 42 }, { code: 'return 1', extra: true }, { code: 'x'.repeat(256 * 1024 + 1) }]) {
      assert.ok(!ok(bad), JSON.stringify(bad).slice(0, 60));
    }
  });
});

describe('config: a code tool server', () => {
  /** A sandbox manifest for the test publisher, signed next to its module in the manifests folder. */
  function signedCodeManifest(name: string, moduleText: string): { manifest: string; module: string } {
    const folder = join(dir, 'manifests');
    mkdirSync(folder, { recursive: true });
    const module = join(folder, `${name}.js`);
    writeFileSync(module, moduleText);
    const manifest = join(folder, `${name}.json`);
    const source = {
      manifestVersion: 1,
      name: `test.${name}`,
      version: '1.0.0',
      serial: 1,
      transport: { type: 'sandbox', module: `${name}.js` },
      tools: [{ name: 'double', description: 'Doubles.', access: 'read', inputSchema: { type: 'object', properties: { n: { type: 'number' } }, required: ['n'] }, sandbox: { cpuMs: 500 } }],
    };
    writeFileSync(manifest, formatEnvelope(signManifestSource(source, manifest, TEST_PUBLISHER, { now: Date.now(), validDays: 30 }).envelope));
    return { manifest, module };
  }

  it('loads with the module text; the tool\'s limits are kept for the backend', () => {
    const text = 'export function double({ n }) { return n * 2; }\n';
    signedCodeManifest('code-a', text);
    const data = baseConfig();
    data['servers'] = { code: { manifest: 'code-a.json' } };
    data['agents'] = { alice: { allow: [{ tools: ['code__*'] }] } };
    const config = loadConfig(configFile(data));
    const manifest = config.servers.get('code');
    assert.ok(manifest, JSON.stringify([...config.rejected]));
    assert.equal(manifest.moduleSource, text);
    assert.equal(manifest.transport.type === 'sandbox' && manifest.transport.sha256, createHash('sha256').update(text).digest('hex'));
    assert.deepEqual(config.catalog.get('code__double')?.tool.sandbox, { cpuMs: 500 });
  });

  it('a module changed or removed after signing refuses that server only (module-modified, module-unreadable)', () => {
    const changed = signedCodeManifest('code-b', 'export function double({ n }) { return n * 2; }\n');
    writeFileSync(changed.module, 'export function double({ n }) { return n * 3; }\n');
    const data = baseConfig();
    data['servers'] = { notes: { manifest: 'notes.json' }, code: { manifest: 'code-b.json' } };
    const config = loadConfig(configFile(data));
    assert.equal(config.rejected.get('code')?.reason, 'module-modified');
    assert.ok(config.servers.has('notes'));
    assert.ok(![...config.catalog.keys()].some((name) => name.startsWith('code__')));

    const removed = signedCodeManifest('code-c', 'export function double({ n }) { return n * 2; }\n');
    writeFileSync(removed.module, Buffer.from([0xff, 0xfe, 0xfd]));
    data['servers'] = { code: { manifest: 'code-c.json' } };
    assert.equal(loadConfig(configFile(data)).rejected.get('code')?.reason, 'module-unreadable');
  });
});
