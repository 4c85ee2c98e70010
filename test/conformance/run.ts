#!/usr/bin/env node
// Runs the MCP conformance suite against the broker fronting the conformance fixture, as
// test/conformance/conformance.test.ts does, and prints the suite's own output.
//
//   node test/conformance/run.ts                      # the active suite, against expected-failures.yml
//   node test/conformance/run.ts --scenario tools-call-sampling --verbose
//   node test/conformance/run.ts --keep               # keep the workspace and results folder
//
// Any argument other than --keep goes to `conformance server` after --url; without any, the
// arguments are `--suite active --expected-failures test/conformance/expected-failures.yml`.
// Results (checks.json per scenario) are written under the workspace's results/ unless -o
// is given. The exit code is the suite's.
import { join } from 'node:path';
import { EXPECTED_FAILURES, runSuite, startConformanceBroker } from './harness.ts';

const argv = process.argv.slice(2);
const keep = argv.includes('--keep');
const passed = argv.filter((arg) => arg !== '--keep');
const target = await startConformanceBroker({ keep });
let code = 1;
try {
  const args = passed.length > 0 ? passed : ['--suite', 'active', '--expected-failures', EXPECTED_FAILURES];
  if (!args.includes('-o') && !args.includes('--output-dir')) args.push('-o', join(target.dir, 'results'));
  console.error(`broker workspace: ${target.dir}; suite URL (bearer proxy): ${target.url}`);
  const run = await runSuite(target.url, args, { timeoutMs: 10 * 60_000, echo: true });
  code = run.code ?? 1;
} finally {
  await target.close();
  if (keep) console.error(`kept: ${target.dir}`);
}
process.exit(code);
