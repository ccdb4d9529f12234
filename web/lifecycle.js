// CAPS: the parcel lifecycle as the pages need it, from protocol/lifecycle.ts (tests/step-rank.test.ts
// checks that the two agree). Loaded before app.js and track.js, which read window.CAPS_LIFECYCLE.
(() => {
  'use strict';
  /** STEP_RANK: each step's place within an attempt; steps repeat across attempts. */
  const rank = Object.freeze({ pickup: 0, 'in-transit': 1, delivered: 2, failed: 2, cancelled: 2, returned: 3 });
  /** A step unknown to this page (a newer hub's) comes after every known step of its attempt. */
  const unknown = Math.max(...Object.values(rank)) + 1;
  window.CAPS_LIFECYCLE = Object.freeze({
    rank,
    /** A step's place within its attempt: a parcel's steps are in order by attempt, then by this, then by time. */
    rankOf: (event) => (Object.hasOwn(rank, event) ? rank[event] : unknown),
  });
})();
