/** A hand-written SVG of a run: throughput bars and latency bars per target, side by side. */

export interface ChartRow {
  label: string;
  parcelsPerSecond: number;
  p50: number;
  p99: number;
}

export interface ChartGroup {
  title: string;
  rows: ChartRow[];
}

const W = 760;
const ROW = 26;
const LEFT = 150;
const BAR = 250;
const GAP = 90;
const COLORS = ['#8a8f98', '#3b82c4', '#2f9e5b', '#c27c0e'];

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '–';
}

/** One SVG document: for each group, parcels/s on the left and p50/p99 latency on the right. */
export function renderChart(title: string, groups: readonly ChartGroup[]): string {
  const parts: string[] = [];
  let y = 40;
  for (const group of groups) {
    const maxRate = Math.max(1, ...group.rows.map((r) => (Number.isFinite(r.parcelsPerSecond) ? r.parcelsPerSecond : 0)));
    const maxLat = Math.max(0.001, ...group.rows.map((r) => (Number.isFinite(r.p99) ? r.p99 : 0)));
    parts.push(`<text x="10" y="${y}" font-weight="bold">${esc(group.title)}</text>`);
    parts.push(`<text x="${LEFT}" y="${y}" fill="#555">parcels/s</text>`);
    parts.push(`<text x="${LEFT + BAR + GAP}" y="${y}" fill="#555">pickup→delivered ms (p50 solid, p99 light)</text>`);
    y += 10;
    group.rows.forEach((row, i) => {
      const color = COLORS[i % COLORS.length] ?? '#888';
      const rate = Number.isFinite(row.parcelsPerSecond) ? row.parcelsPerSecond : 0;
      const w = (rate / maxRate) * BAR;
      const p50 = Number.isFinite(row.p50) ? (row.p50 / maxLat) * BAR : 0;
      const p99 = Number.isFinite(row.p99) ? (row.p99 / maxLat) * BAR : 0;
      const lx = LEFT + BAR + GAP;
      parts.push(
        `<text x="10" y="${y + 16}">${esc(row.label)}</text>`,
        `<rect x="${LEFT}" y="${y + 4}" width="${w.toFixed(1)}" height="16" fill="${color}"/>`,
        `<text x="${LEFT + w + 4}" y="${y + 16}" font-size="11">${fmt(row.parcelsPerSecond)}</text>`,
        `<rect x="${lx}" y="${y + 4}" width="${p99.toFixed(1)}" height="16" fill="${color}" opacity="0.35"/>`,
        `<rect x="${lx}" y="${y + 4}" width="${p50.toFixed(1)}" height="16" fill="${color}"/>`,
        `<text x="${lx + Math.max(p99, p50) + 4}" y="${y + 16}" font-size="11">${fmt(row.p50, 2)} / ${fmt(row.p99, 2)}</text>`,
      );
      y += ROW;
    });
    y += 30;
  }
  const height = y;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif" font-size="13">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">${esc(title)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
