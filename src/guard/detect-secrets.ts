import { creator as recommended } from '@secretlint/secretlint-rule-preset-recommend';
import type { SecretLintRuleContext, SecretLintRuleCreator, SecretLintSourceCode } from '@secretlint/types';
import { rulesToRun } from './rule-anchors.ts';

/**
 * Detected secrets: API keys, tokens, private keys, passwords in URLs and similar, found
 * by secretlint's recommended rule set (maintained, bundled with no dependencies, MIT).
 * The rules are run directly through their public rule API, not through secretlint's
 * linter: that is about ten times faster per call and does not accumulate profiling
 * entries in a long-running process. Filter rules (which let "secretlint-disable"
 * comments silence findings) are not run: a tool's output must not be able to switch
 * detection off.
 */

export const DETECTED = '[redacted: secret]';
/** A reported value shorter than this is not searched for elsewhere in the text (it would mask ordinary words). */
const MIN_SECRET_CHARS = 8;

interface LoadedRule {
  /** The rule's id without its package prefix: aws, github, ... */
  readonly id: string;
  readonly rule: SecretLintRuleCreator<unknown>;
  readonly options: unknown;
}

const RULES: readonly LoadedRule[] = (() => {
  const rules: LoadedRule[] = [];
  recommended.create(
    {
      sharedOptions: {},
      registerRule: (rule, defaults) => {
        // filter-comments is declared a scanner but only silences other rules' findings.
        if (rule.meta.type === 'scanner' && !rule.meta.id.endsWith('/secretlint-rule-filter-comments')) rules.push({ id: rule.meta.id.replace('@secretlint/secretlint-rule-', ''), rule: rule as SecretLintRuleCreator<unknown>, options: defaults?.options ?? {} });
      },
    },
    {},
  );
  return rules;
})();

/** The ids of the rules in use, for docs and the audit. */
export const DETECTION_RULES: readonly string[] = RULES.map(({ id }) => id);

/** Ranges [start, end) of text that a rule reports as a secret, merged and sorted. */
export async function findSecrets(text: string): Promise<[number, number][]> {
  if (text.length < 8) return [];
  const ranges: [number, number][] = [];
  const source: SecretLintSourceCode = {
    hasBOM: false,
    content: text,
    filePath: undefined,
    physicalFilePath: undefined,
    contentType: 'text',
    ext: '',
    getFilePath: () => undefined,
    getPhysicalFilePath: () => undefined,
  } as unknown as SecretLintSourceCode;
  // Only the rules that can find something in this text (rule-anchors.ts): the same findings.
  for (const { rule, options } of rulesToRun(text, RULES)) {
    const context: SecretLintRuleContext = {
      sharedOptions: {},
      createTranslator: () => ((id: string, data: unknown) => ({ message: id, data })) as never,
      report: ({ range, message }) => {
        const [start, end] = range;
        if (Number.isInteger(start) && Number.isInteger(end) && start >= 0 && end > start && end <= text.length) ranges.push([start, end]);
        // Some rules report a range that does not cover the secret (the AWS secret key rule
        // gives the match's start with the secret's length), so the secret the rule names
        // is masked too, wherever it occurs.
        for (const secret of reportedSecrets(message)) {
          for (let at = text.indexOf(secret); at !== -1; at = text.indexOf(secret, at + secret.length)) ranges.push([at, at + secret.length]);
        }
      },
      // Ignoring a finding is never honoured: output cannot switch detection off.
      ignore: () => undefined,
    };
    await rule.create(context, options).file?.(source);
  }
  return merge(ranges);
}

/** Replaces every detected secret in text with a marker; counts them. */
export async function maskSecrets(text: string, counts: { detected: number }): Promise<string> {
  if (text.length < 8) return text;
  const ranges = await findSecrets(text);
  if (ranges.length === 0) return text;
  let out = '';
  let at = 0;
  for (const [start, end] of ranges) {
    out += text.slice(at, start) + DETECTED;
    at = end;
  }
  counts.detected += ranges.length;
  return out + text.slice(at);
}

/** The values a rule's report names (the key, token or credential it found); never a file name. */
function reportedSecrets(message: unknown): string[] {
  const data = (message as { data?: unknown } | null)?.data;
  if (typeof data !== 'object' || data === null) return [];
  return Object.entries(data)
    .filter(([name, value]) => name !== 'FILE_NAME' && typeof value === 'string' && value.length >= MIN_SECRET_CHARS)
    .map(([, value]) => value as string);
}

function merge(ranges: [number, number][]): [number, number][] {
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const merged: [number, number][] = [];
  for (const range of ranges) {
    const last = merged.at(-1);
    if (last && range[0] <= last[1]) last[1] = Math.max(last[1], range[1]);
    else merged.push([range[0], range[1]]);
  }
  return merged;
}
