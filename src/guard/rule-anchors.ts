import { hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * A prefilter for secret detection: a rule runs only on text that holds a string every one
 * of its findings contains. Running a rule costs a regular-expression pass over the text
 * per pattern (about forty for the whole set); looking for all the fixed strings costs two
 * passes, so ordinary text skips almost every rule for a third of the cost.
 *
 * Each rule's strings are read off its patterns in
 * @secretlint/secretlint-rule-preset-recommend 13.0.7 (module/index.js, SHA-256 below),
 * run as findSecrets runs them: no file name, ext '', no options. A rule reports only what
 * its patterns match, and a text holding none of the strings of one of its groups cannot
 * match them, so a skipped rule would have found nothing. With any other build of the
 * rules the prefilter is off and every rule runs. The strings hold only for the rules as
 * findSecrets runs them: no file name, and each rule's default options (aws with its
 * key-id scans off); a test checks the preset still passes none.
 */
const PINNED_RULES_SHA256 = '7606f0952720d9320b5f6a019711defa7caa1579a7bc624eb7ac3447f48e5792';

/** From a pattern with flag i and without u, under which an ASCII letter matches itself in either case and nothing else: compared so. */
interface Caseless {
  readonly caseless: string;
}
type Anchor = string | Caseless;
const caseless = (text: string): Caseless => ({ caseless: text });

/**
 * Per rule, groups of strings: a finding contains one string of every group. A rule not
 * named here always runs: gcp reads only .p12 and .json files, and databricks's one pattern
 * (dapi and 32 hex digits) costs less than searching a text for dapi.
 */
export const RULE_ANCHORS: Readonly<Record<string, readonly (readonly Anchor[])[]>> = {
  // its one pattern by default (the ID scans are off): (?:SECRET|secret|Secret)
  aws: [['SECRET', 'secret', 'Secret']],
  // :x-oauth-basic@github.com/ (a text with no file name counts as package.json); npm_ tokens
  npm: [[':x-oauth-basic@github', 'npm_']],
  // token prefixes then -; the webhook pattern (flag i): https:\/\/hooks\.slack\.com\/services\/
  slack: [['xoxb-', 'xoxp-', 'xapp-', 'xoxa-', 'xoxo-', 'xoxr-', caseless('https://hooks.slack.com/services/')]],
  // (?:https?|ftp|ftps):\/\/user:password@host
  basicauth: [['http://', 'https://', 'ftp://', 'ftps://'], ['@']],
  // both alternatives: sk-… T3BlbkFJ …
  openai: [['sk-'], ['T3BlbkFJ']],
  anthropic: [['sk-ant-api0']],
  groq: [['gsk_']],
  huggingface: [['hf_']],
  linear: [['lin_api_']],
  notion: [['ntn_']],
  // -----BEGIN … PRIVATE KEY----- … -----END
  privatekey: [['-----BEGIN'], ['-----END']],
  sendgrid: [['SG.']],
  shopify: [['shppa_', 'shpca_', 'shpat_', 'shpss_']],
  stripe: [['sk_live_', 'sk_test_', 'rk_live_', 'rk_test_']],
  github: [['ghp_', 'gho_', 'ghu_', 'ghs_', 'ghr_', 'github_pat_']],
  gitlab: [['glpat-']],
  grafana: [['glc_', 'glsa_']],
  '1password': [['ops_ey']],
  // flag i: mongodb(?:\+srv)?:\/\/, (?:jdbc:)?mysql(?:x)?:\/\/, postgres(?:ql)?:\/\/
  'database-connection-string': [['mongodb://', 'mongodb+srv://', 'mysql://', 'mysqlx://', 'postgres://', 'postgresql://'].map(caseless)],
  'hashicorp-vault': [['hvs.', 'hvb.', 'hvr.']],
  vercel: [['vcp_', 'vci_', 'vca_', 'vcr_', 'vck_']],
  docker: [['dckr_pat_']],
  figma: [['figd_']],
  cloudflare: [['cfk_', 'cfut_', 'cfat_']],
  tailscale: [['tskey-']],
};

/** Whether the rules installed are the build the anchors were read from. */
export const PREFILTER_ACTIVE: boolean = (() => {
  try {
    const file = fileURLToPath(import.meta.resolve('@secretlint/secretlint-rule-preset-recommend'));
    return hash('sha256', readFileSync(file), 'hex') === PINNED_RULES_SHA256;
  } catch {
    return false;
  }
})();

/** How an anchor is known in the set of anchors found: case-sensitive, or caseless in lower case. */
const keyOf = (anchor: Anchor): string => (typeof anchor === 'string' ? `s${anchor}` : `i${anchor.caseless.toLowerCase()}`);

/**
 * One pattern per kind of anchor, longest first: at each position of the text where an
 * anchor starts, it matches the longest one there. A shorter one starting there too is a
 * prefix of it, so every anchor a match contains counts as found with it (implied).
 */
interface AnchorScan {
  readonly pattern: RegExp;
  readonly kind: 's' | 'i';
  /** Per anchor (as its key), the keys of the anchors it contains, itself included. */
  readonly implied: ReadonlyMap<string, readonly string[]>;
}

function anchorScan(kind: 's' | 'i'): AnchorScan {
  const texts = [...new Set(Object.values(RULE_ANCHORS).flat(2).filter((anchor) => (typeof anchor === 'string') === (kind === 's')).map((anchor) => keyOf(anchor).slice(1)))];
  texts.sort((a, b) => b.length - a.length);
  const implied = new Map(texts.map((text) => [`${kind}${text}`, texts.filter((other) => text.includes(other)).map((other) => `${kind}${other}`)]));
  const pattern = new RegExp(texts.map((text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), kind === 's' ? 'g' : 'gi');
  return { pattern, kind, implied };
}

const SCANS: readonly AnchorScan[] = [anchorScan('s'), anchorScan('i')];

/**
 * The rules that may find something in text: all of them when the prefilter is off, else
 * those that hold an anchor of every one of their groups, and those without anchors. The
 * text is scanned once per kind of anchor, trying every position (an anchor may start
 * inside another's match).
 */
export function rulesToRun<Rule extends { readonly id: string }>(text: string, rules: readonly Rule[]): readonly Rule[] {
  if (!PREFILTER_ACTIVE) return rules;
  const found = new Set<string>();
  for (const { pattern, kind, implied } of SCANS) {
    pattern.lastIndex = 0;
    for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
      // Under flag i without u, an ASCII letter matches only itself in either case (tested), so lower-casing gives the anchor.
      for (const key of implied.get(`${kind}${kind === 'i' ? match[0].toLowerCase() : match[0]}`) ?? []) found.add(key);
      pattern.lastIndex = match.index + 1;
    }
  }
  return rules.filter((rule) => RULE_ANCHORS[rule.id]?.every((group) => group.some((anchor) => found.has(keyOf(anchor)))) ?? true);
}
