// The official MCP conformance suite (@modelcontextprotocol/conformance, server scenarios,
// active suite) run against the broker's Streamable HTTP front, with the broker fronting the
// conformance fixture (examples/conformance-server) over stdio under a signed manifest.
// The run must pass with test/conformance/expected-failures.yml as its baseline: every
// scenario passes or is listed there, and a listed one that passes fails the run (the suite
// calls it stale). docs/conformance.md explains the list and how to run this by hand.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EXPECTED_FAILURES, expectedFailures, readResults, runSuite, scenarioFailed, startConformanceBroker, type ConformanceBroker } from './harness.ts';

/** The whole active suite takes a few seconds; this bounds a hung scenario. */
const SUITE_TIMEOUT_MS = 90_000;


let target: ConformanceBroker | undefined;

before(async () => {
  target = await startConformanceBroker();
});

after(async () => {
  await target?.close();
});

describe('MCP conformance suite through the broker', () => {
  it('passes the active server suite, except the scenarios listed in expected-failures.yml', { timeout: SUITE_TIMEOUT_MS + 30_000 }, async () => {
    const expected = expectedFailures();
    const outputDir = join(target!.dir, 'results');
    const run = await runSuite(target!.url, ['--suite', 'active', '-o', outputDir, '--expected-failures', EXPECTED_FAILURES], { timeoutMs: SUITE_TIMEOUT_MS });
    const output = `${run.stdout}\n${run.stderr}`;
    assert.equal(run.signal, null, `the suite was killed after ${SUITE_TIMEOUT_MS} ms:\n${output}`);

    const announced = Number(/Running active suite \((\d+) scenarios\)/.exec(run.stdout)?.[1]);
    assert.ok(announced > 0, `the suite announced its scenarios:\n${output}`);
    const results = readResults(outputDir);
    assert.equal(results.size, announced, `one result per scenario:\n${output}`);
    // The suite ignores a baseline entry it did not run: a misspelt or retired name would prove nothing.
    for (const scenario of expected) assert.ok(results.has(scenario), `expected-failures.yml lists ${scenario}, which the suite did not run`);

    // The verdict the suite gives with the baseline, from the results: a scenario fails on any
    // FAILURE or WARNING check; one not listed must pass, and one listed must fail (else stale).
    const failing = new Set([...results].filter(([, checks]) => scenarioFailed(checks)).map(([scenario]) => scenario));
    const unexpected = [...failing].filter((scenario) => !expected.includes(scenario));
    const stale = expected.filter((scenario) => !failing.has(scenario));
    const checksOf = (scenarios: string[]) => scenarios.map((scenario) => `${scenario}: ${JSON.stringify(results.get(scenario))}`).join('\n');
    assert.deepEqual(unexpected, [], `scenarios failed that expected-failures.yml does not list:\n${checksOf(unexpected)}\n${output}`);
    assert.deepEqual(stale, [], `scenarios passed that expected-failures.yml lists as failing (remove them from it):\n${output}`);
    // The suite's own exit code agrees.
    assert.equal(run.code, 0, `the suite's verdict against its baseline:\n${output}`);

    // Some checks pass on answers that prove little (tools-call-error takes any isError text,
    // tools-call-simple-text any text, the list scenarios an empty list, completion-complete
    // no values): no passing scenario may rest on a broker refusal, and these must show what
    // only the fixture, reached through the broker, answers.
    for (const [scenario, checks] of results) {
      if (scenarioFailed(checks)) continue;
      const text = JSON.stringify(checks);
      assert.ok(!text.includes('mcp-warden/refusal') && !text.includes('mcp-warden refused'), `${scenario} passed on a broker refusal: ${text}`);
    }
    const details = (scenario: string): Record<string, unknown> => (results.get(scenario)?.[0]?.details ?? {}) as Record<string, unknown>;
    assert.match(JSON.stringify(details('tools-call-simple-text')), /This is a simple text response for testing\./);
    assert.match(JSON.stringify(details('tools-call-error')), /This tool intentionally returns an error for testing/);
    assert.equal(details('tools-list')['toolCount'], 16, 'every fixture tool is listed');
    assert.equal(details('prompts-list')['promptCount'], 4, 'every fixture prompt is listed');
    assert.equal(details('resources-list')['resourceCount'], 3, 'every fixture resource is listed');
    assert.deepEqual(details('completion-complete')['result'], { completion: { values: ['test', 'testing'], total: 2 } }, "the fixture's completions for arg1 = test");
  });
});
