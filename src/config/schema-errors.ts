import type { ErrorObject } from 'ajv';

/**
 * Turns ajv's errors into one line per problem: the path inside the document (as a
 * JSON pointer, `/` for the root) and what was expected there.
 */
export function describeSchemaErrors(errors: readonly ErrorObject[] | null | undefined): string[] {
  if (!errors || errors.length === 0) return ['the document does not match its schema'];
  const lines = new Set<string>();
  for (const error of errors) {
    const where = error.instancePath === '' ? '/' : error.instancePath;
    let what = error.message ?? 'is invalid';
    if (error.keyword === 'additionalProperties') {
      what = `has unknown property "${String(error.params['additionalProperty'])}" (allowed: see the schema)`;
    } else if (error.keyword === 'enum') {
      what = `must be one of ${JSON.stringify(error.params['allowedValues'])}`;
    } else if (error.keyword === 'required') {
      what = `is missing required property "${String(error.params['missingProperty'])}"`;
    }
    lines.add(`at ${where}: ${what}`);
    if (lines.size >= 20) break;
  }
  return [...lines];
}
