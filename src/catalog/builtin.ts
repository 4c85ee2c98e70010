import type { SandboxSettings } from '../config/types.ts';
import { compileArgumentSchema } from '../guard/argument-schema.ts';
import type { ManifestTool } from '../manifest/types.ts';
import { exposedName, type CatalogTool } from './build.ts';

/** The server key of the broker's own tools; no configured server may use it. */
export const CODE_MODE_SERVER = 'warden';
export const RUN_CODE_TOOL = 'run_code';
export const RUN_CODE = exposedName(CODE_MODE_SERVER, RUN_CODE_TOOL);

/** The longest code a run takes, characters; sandbox.limits.inputBytes also applies, in bytes. */
const MAX_CODE_CHARS = 256 * 1024;

/**
 * Code mode's one tool, as the catalog holds it. An agent sees it only when a grant names
 * it exactly, and then with a description that lists that agent's own tools as a typed
 * API (src/sandbox/typed-api.ts); this generic description is what policy tools show.
 * It is a read tool: the calls it makes are checked one by one, writes included.
 */
export function runCodeTool(sandbox: SandboxSettings): CatalogTool {
  const inputSchema = {
    type: 'object',
    properties: {
      code: {
        type: 'string',
        minLength: 1,
        maxLength: MAX_CODE_CHARS,
        description: 'The body of an async JavaScript function. Call tools with `await tools.<server>.<tool>(args)`; `return` the result (JSON).',
      },
    },
    required: ['code'],
    additionalProperties: false,
  } as const;
  const tool: ManifestTool = {
    name: RUN_CODE_TOOL,
    title: 'Run code that calls your tools',
    description: 'Runs JavaScript in a sandbox (no network, files, timers or modules) that calls your other tools, each call checked like a direct one.',
    access: 'read',
    inputSchema,
    timeoutMs: sandbox.limits.wallMs,
  };
  return Object.freeze({
    exposedName: RUN_CODE,
    server: CODE_MODE_SERVER,
    tool,
    definition: Object.freeze({
      name: RUN_CODE,
      title: tool.title!,
      description: tool.description,
      inputSchema,
      annotations: Object.freeze({ readOnlyHint: true, destructiveHint: false, idempotentHint: false, openWorldHint: true }),
    }),
    validateArguments: compileArgumentSchema(inputSchema),
  });
}
