import { STEP_RANK } from '../protocol/lifecycle.js';
import { TRACKING_WORDS } from './tracking-page.js';

/**
 * `GET /lifecycle.js`: what the pages need of the lifecycle, from its one source, so that nothing of
 * it is written again in web/: each step's place within an attempt (STEP_RANK, for ordering a
 * parcel's steps) and the tracking page's words. Loaded before app.js and track.js, which read
 * `window.CAPS_LIFECYCLE`. A script file, not part of any page's HTML: a tracking page's own
 * content still shows nothing but its parcel.
 */
export const LIFECYCLE_SCRIPT = `// CAPS: the parcel lifecycle as the pages need it, made by the hub from protocol/lifecycle.ts
(() => {
  'use strict';
  const rank = Object.freeze(${JSON.stringify(STEP_RANK)});
  // a step unknown to this page (a newer hub's) comes after every known step of its attempt
  const unknown = ${Math.max(...Object.values(STEP_RANK)) + 1};
  window.CAPS_LIFECYCLE = Object.freeze({
    rank,
    rankOf: (event) => (Object.hasOwn(rank, event) ? rank[event] : unknown),
    words: Object.freeze(${JSON.stringify(TRACKING_WORDS)}),
  });
})();
`;
