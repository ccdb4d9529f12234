import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { PARCEL_EVENTS, STEP_RANK, TRANSITIONS } from '../protocol/lifecycle.js';
import { LIFECYCLE_SCRIPT } from '../hub/lifecycle-script.js';

/** The hub's /lifecycle.js as a page runs it: what it leaves on `window`. */
function pageLifecycle(): { rank: Record<string, number>; rankOf: (event: string) => number } {
  const window: { CAPS_LIFECYCLE?: { rank: Record<string, number>; rankOf: (event: string) => number } } = {};
  runInNewContext(LIFECYCLE_SCRIPT, { window });
  if (!window.CAPS_LIFECYCLE) throw new Error('/lifecycle.js did not define window.CAPS_LIFECYCLE');
  return window.CAPS_LIFECYCLE;
}

describe("a step's place within its attempt", () => {
  it('is the longest way to it from pickup through TRANSITIONS', () => {
    expect(STEP_RANK).toEqual({ pickup: 0, 'in-transit': 1, delivered: 2, failed: 2, cancelled: 2, returned: 3 });
    for (const from of PARCEL_EVENTS) {
      for (const to of TRANSITIONS[from]) expect(STEP_RANK[to], `${from} → ${to}`).toBeGreaterThan(STEP_RANK[from]);
    }
  });

  it('is the same in the /lifecycle.js the hub serves the pages, which puts a step it does not know after every known one', () => {
    const page = pageLifecycle();
    // the page's objects come from another realm: compared as data
    expect(JSON.parse(JSON.stringify(page.rank))).toEqual(STEP_RANK);
    for (const event of PARCEL_EVENTS) expect(page.rankOf(event), event).toBe(STEP_RANK[event]);
    for (const unknown of ['collected', 'toString', '']) expect(page.rankOf(unknown), unknown).toBeGreaterThan(Math.max(...Object.values(STEP_RANK)));
  });
});
