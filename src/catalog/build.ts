import { WardenError } from '../errors.ts';
import type { ArgumentValidator } from '../guard/argument-schema.ts';
import type { OutputScope } from '../guard/output-scope.ts';
import type { Manifest, ManifestTool, ToolAnnotations } from '../manifest/types.ts';

/** Many clients reject tool names outside this pattern. */
export const EXPOSED_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
export const SEPARATOR = '__';

/** The definition an agent sees, built only from the manifest. */
export interface ExposedDefinition {
  readonly name: string;
  readonly title?: string;
  readonly description: string;
  readonly inputSchema: Readonly<Record<string, unknown>>;
  readonly outputSchema?: Readonly<Record<string, unknown>>;
  readonly annotations: Readonly<ToolAnnotations> & { readonly readOnlyHint: boolean; readonly destructiveHint: boolean; readonly idempotentHint: boolean };
}

export interface CatalogTool {
  readonly exposedName: string;
  readonly server: string;
  readonly tool: ManifestTool;
  readonly definition: ExposedDefinition;
  /** The manifest's input schema, compiled once at load. */
  readonly validateArguments: ArgumentValidator;
  /** The manifest's output schema, compiled once at load, when it declares one. */
  readonly validateOutput?: ArgumentValidator;
  /** The manifest's scope constraint, when it declares outputFields. */
  readonly outputScope?: OutputScope;
}

export function exposedName(server: string, tool: string): string {
  return `${server}${SEPARATOR}${tool}`;
}

/**
 * The name agents see for a server's tool or prompt: prefixed, unless the config exposes
 * that server's names as they are (servers.<key>.prefix: false). An unprefixed name may not
 * contain the separator, so it can never pass for another server's (or the broker's) name.
 */
export function agentFacingName(server: string, name: string, unprefixed: ReadonlySet<string>, configFile: string): string {
  if (!unprefixed.has(server)) return exposedName(server, name);
  if (name.includes(SEPARATOR)) {
    throw new WardenError('WARDEN_CONFIG_INVALID', `${configFile}: at /servers/${server}/prefix: "${name}" contains "${SEPARATOR}", so it cannot be exposed without the server prefix; keep prefix: true`, { file: configFile, server });
  }
  return name;
}

/**
 * Builds the one catalog of exposed tools from the manifests and the broker's own tools.
 * Server keys cannot contain an underscore (config schema), so `<server>__<tool>` is
 * unambiguous; collisions are still checked, since a check that cannot fail costs nothing.
 */
export function buildCatalog(servers: ReadonlyMap<string, Manifest>, configFile: string, builtins: readonly CatalogTool[] = [], unprefixed: ReadonlySet<string> = new Set()): ReadonlyMap<string, CatalogTool> {
  const catalog = new Map<string, CatalogTool>();
  // The broker's own tools (code mode); the config refuses a server with their key.
  for (const tool of builtins) catalog.set(tool.exposedName, tool);
  for (const [server, manifest] of servers) {
    for (const tool of manifest.tools) {
      const name = agentFacingName(server, tool.name, unprefixed, configFile);
      if (!EXPOSED_NAME.test(name)) {
        throw new WardenError(
          'WARDEN_CONFIG_INVALID',
          `${configFile}: at /servers/${server}: exposed tool name "${name}" is longer than 64 characters or has characters clients reject; shorten the server key or the tool name`,
          { file: configFile, server, tool: tool.name },
        );
      }
      const existing = catalog.get(name);
      if (existing) {
        throw new WardenError(
          'WARDEN_CONFIG_INVALID',
          `${configFile}: exposed tool name "${name}" is produced by both server "${existing.server}" and server "${server}"`,
          { file: configFile, name },
        );
      }
      const validateArguments = manifest.validators.get(tool.name);
      if (!validateArguments) throw new WardenError('WARDEN_MANIFEST_INVALID', `${manifest.file}: tool "${tool.name}" has no compiled input schema`);
      const validateOutput = manifest.outputValidators.get(tool.name);
      const outputScope = manifest.outputScopes.get(tool.name);
      catalog.set(
        name,
        Object.freeze({
          exposedName: name,
          server,
          tool,
          definition: toDefinition(name, tool),
          validateArguments,
          ...(validateOutput ? { validateOutput } : {}),
          ...(outputScope ? { outputScope } : {}),
        }),
      );
    }
  }
  return catalog;
}

function toDefinition(name: string, tool: ManifestTool): ExposedDefinition {
  return Object.freeze({
    name,
    ...(tool.title === undefined ? {} : { title: tool.title }),
    description: tool.description,
    inputSchema: tool.inputSchema,
    // With a scope constraint the agent sees a subset of the declared output, which the
    // declared schema may no longer describe, so the schema is not shown.
    ...(tool.outputSchema === undefined || tool.outputFields !== undefined ? {} : { outputSchema: tool.outputSchema }),
    // Annotations come from the signed manifest, never from the live server, and the hints
    // from the access class the policy enforces: what the agent is told is what is enforced.
    annotations: Object.freeze({
      ...tool.annotations,
      readOnlyHint: tool.access === 'read',
      destructiveHint: tool.access === 'destructive',
      idempotentHint: tool.access === 'read' || tool.idempotent === true,
    }),
  });
}
