// npm start: serve the bundled demo workspace over Streamable HTTP on 127.0.0.1:7070.
// The workspace is exactly what `mcp-warden init demo-workspace` writes; it is created on
// first start and reused after that (delete the folder to start afresh).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { writeWorkspace } from '../src/cli/init.ts';
import { main, reportError } from '../src/cli/main.ts';
import { packageRoot } from '../src/paths.ts';

const workspace = join(packageRoot(), 'demo-workspace');
const config = join(workspace, 'warden.yaml');
try {
  if (!existsSync(config)) {
    writeWorkspace(workspace, false);
    process.stderr.write(`mcp-warden: wrote the demo workspace to ${workspace}\n`);
  } else if (!existsSync(join(workspace, 'keys', 'demo-publisher.pub'))) {
    // Written by a version without signed manifests: every manifest in it would be refused.
    process.stderr.write(`mcp-warden: ${workspace} predates signed manifests; delete it and run npm start again to write a new one\n`);
    process.exit(1);
  }
} catch (error) {
  process.exit(reportError(error));
}
process.stderr.write(
  [
    `mcp-warden: config ${config}`,
    `mcp-warden: agent "demo" authenticates with: Authorization: Bearer $(cat ${join(workspace, 'demo-agent.token')})`,
    'mcp-warden: stop with Ctrl-C. In another terminal, `npm run demo` runs a scripted agent.',
    '',
  ].join('\n'),
);
process.exitCode = await main(['serve', '--config', config, '--http', ...process.argv.slice(2)]);
