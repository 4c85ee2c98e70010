// Example code tools (manifests/text.manifest.yaml). mcp-warden runs each call in a fresh
// isolated-vm isolate: the exported function named like the tool gets the call's
// arguments, already checked against the tool's inputSchema, and returns its result
// (JSON). There is no network, file, timer, module or process here: only plain
// JavaScript, and a console whose output the broker captures.

/** Counts words, lines and characters, and lists the most frequent words. */
export function word_stats({ text, top = 5 }) {
  const words = text.toLowerCase().match(/[\p{L}\p{N}']+/gu) ?? [];
  const counts = new Map();
  for (const word of words) counts.set(word, (counts.get(word) ?? 0) + 1);
  const frequent = [...counts]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, top)
    .map(([word, count]) => ({ word, count }));
  return {
    words: words.length,
    lines: text === '' ? 0 : text.split('\n').length,
    characters: [...text].length,
    top: frequent,
  };
}

/** Parses CSV text with a header row into one object per row (quoted fields, "" escapes). */
export function csv_to_json({ csv, delimiter = ',' }) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < csv.length; i++) {
    const c = csv[i];
    if (quoted) {
      if (c === '"' && csv[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c === '"' && field === '') {
      quoted = true;
    } else if (c === delimiter) {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && csv[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else {
      field += c;
    }
  }
  if (quoted) throw new Error('the CSV ends inside a quoted field');
  if (field !== '' || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  const [header = [], ...body] = rows;
  return { columns: header, rows: body.map((cells) => Object.fromEntries(header.map((name, index) => [name, cells[index] ?? '']))) };
}

/** A URL- and file-name-safe slug: lowercase ASCII letters, digits and single hyphens. */
export function slugify({ text, maxLength = 64 }) {
  const slug = text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return slug.slice(0, maxLength).replace(/-+$/, '');
}
