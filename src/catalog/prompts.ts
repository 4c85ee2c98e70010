import { WardenError } from '../errors.ts';
import type { Manifest, ManifestPrompt } from '../manifest/types.ts';
import { agentFacingName, EXPOSED_NAME } from './build.ts';

/** A prompt as agents see it: named <server>__<prompt>, defined only by the signed manifest. */
export interface CatalogPrompt {
  readonly exposedName: string;
  readonly server: string;
  readonly prompt: ManifestPrompt;
  readonly definition: ManifestPrompt;
}

/**
 * Every prompt of the accepted manifests, under the same naming as tools, so a grant
 * pattern reads the same for both. The names are checked like tool names.
 */
export function buildPromptCatalog(servers: ReadonlyMap<string, Manifest>, configFile: string, unprefixed: ReadonlySet<string> = new Set()): ReadonlyMap<string, CatalogPrompt> {
  const catalog = new Map<string, CatalogPrompt>();
  for (const [server, manifest] of servers) {
    for (const prompt of manifest.prompts) {
      const name = agentFacingName(server, prompt.name, unprefixed, configFile);
      if (!EXPOSED_NAME.test(name)) {
        throw new WardenError('WARDEN_CONFIG_INVALID', `${configFile}: at /servers/${server}: exposed prompt name "${name}" is longer than 64 characters or has characters clients reject; shorten the server key or the prompt name`, {
          file: configFile,
          server,
          prompt: prompt.name,
        });
      }
      if (catalog.has(name)) throw new WardenError('WARDEN_CONFIG_INVALID', `${configFile}: exposed prompt name "${name}" is produced by two servers`, { file: configFile, name });
      catalog.set(name, Object.freeze({ exposedName: name, server, prompt, definition: Object.freeze({ ...prompt, name }) }));
    }
  }
  return catalog;
}
