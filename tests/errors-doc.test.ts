import { readFileSync } from 'node:fs';
import { describe, it, expect } from 'vitest';
import type { CapsErrorCode } from '../protocol/errors.js';
import { CAPS_ERROR_CODES, CAPS_ERRORS, isCapsErrorCode } from '../protocol/errors.js';

const DOC = new URL('../docs/errors.md', import.meta.url);

interface DocRow {
  line: number;
  code: string;
  status: number;
}

/** The table rows of docs/errors.md that name a code: `| CODE | STATUS | meaning |`. */
function readRows(): DocRow[] {
  const rows: DocRow[] = [];
  readFileSync(DOC, 'utf8')
    .split(/\r?\n/)
    .forEach((text, index) => {
      if (!text.trimStart().startsWith('|')) return;
      const cells = text.split('|').slice(1, -1).map((cell) => cell.trim());
      const codeCell = cells[0] ?? '';
      const codes = codeCell.match(/CAPS_ERR_[A-Z_]+/g) ?? [];
      if (codes.length === 0) return;
      expect(codes, `docs/errors.md line ${index + 1}: one code per row`).toHaveLength(1);
      rows.push({ line: index + 1, code: codes[0] ?? '', status: Number(cells[1] ?? '') });
    });
  return rows;
}

describe('docs/errors.md', () => {
  const rows = readRows();

  it('lists exactly the codes of CAPS_ERRORS', () => {
    const documented = new Set(rows.map((r) => r.code));
    const known = new Set<string>(CAPS_ERROR_CODES);
    const missing = [...known].filter((c) => !documented.has(c));
    const unknown = [...documented].filter((c) => !known.has(c));
    const problems = [
      ...(missing.length > 0 ? [`missing from docs/errors.md: ${missing.join(', ')}`] : []),
      ...(unknown.length > 0 ? [`in docs/errors.md but not in CAPS_ERRORS: ${unknown.join(', ')}`] : []),
    ];
    expect(problems, problems.join('\n')).toEqual([]);
  });

  it('lists each code once, in the order of CAPS_ERRORS', () => {
    expect(rows.map((r) => r.code)).toEqual(CAPS_ERROR_CODES);
  });

  it("gives each code its HTTP status from CAPS_ERRORS", () => {
    const wrong = rows
      .filter((r): r is DocRow & { code: CapsErrorCode } => isCapsErrorCode(r.code))
      .filter((r) => r.status !== CAPS_ERRORS[r.code].status)
      .map((r) => `line ${r.line}: ${r.code} says ${r.status}, CAPS_ERRORS says ${CAPS_ERRORS[r.code].status}`);
    expect(wrong, wrong.join('\n')).toEqual([]);
  });
});
