/**
 * The parcel lifecycle: one state machine shared by the hub (every storage), the clients, the HTTP
 * API and the dashboard. A parcel's state is named after the step that led to it.
 *
 *   pickup ──in-transit──▶ in-transit ──delivered──▶ delivered
 *     │  └──delivered (a course driver may skip in-transit)──▶ delivered
 *     │                      │
 *     │                      └──failed──▶ failed ──returned──▶ returned
 *     │                               │
 *     │                               └─(attempts left, reason retryable)─▶ pickup (attempt + 1)
 *     └──cancelled (also from in-transit)──▶ cancelled
 *
 * `delivered`, `returned` and `cancelled` end a parcel. The course's clients only ever use the
 * first three steps (COURSE_EVENTS), and nothing of the rest is needed in lab mode.
 */

/** The course's three steps, the only ones lab mode needs. */
export const COURSE_EVENTS = ['pickup', 'in-transit', 'delivered'] as const;
export type CourseEvent = (typeof COURSE_EVENTS)[number];

/** Every step a parcel may take (the course's three first). */
export const PARCEL_EVENTS = ['pickup', 'in-transit', 'delivered', 'failed', 'returned', 'cancelled'] as const;
/** A parcel's step, and the state it leaves the parcel in. */
export type ParcelEvent = (typeof PARCEL_EVENTS)[number];

/** States no step leaves: the parcel's story is over (and retention may remove it). */
export const FINAL_EVENTS = ['delivered', 'returned', 'cancelled'] as const satisfies readonly ParcelEvent[];
export const FINAL_STATES: ReadonlySet<ParcelEvent> = new Set(FINAL_EVENTS);

/** Why an attempt failed: a documented list, so stores and dashboards can count and act on them. */
export const FAILURE_REASONS = ['recipient-absent', 'address-not-found', 'refused', 'damaged', 'access-denied', 'other'] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];

/**
 * Reasons after which the parcel goes back to the store whatever attempts are left: a customer who
 * refused it will refuse it again, and damaged goods are not delivered.
 */
export const FINAL_REASONS: ReadonlySet<FailureReason> = new Set(['refused', 'damaged']);

/** Attempts per parcel unless the hub is told otherwise for its store (`--max-attempts`). */
export const DEFAULT_MAX_ATTEMPTS = 3;
/** The most a store may be given. */
export const MAX_ATTEMPTS_LIMIT = 20;

/** Who publishes each step: a store's vendor hands over and cancels, a driver reports the rest. */
export const PUBLISHED_BY: Readonly<Record<ParcelEvent, 'vendor' | 'driver'>> = {
  pickup: 'vendor',
  'in-transit': 'driver',
  delivered: 'driver',
  failed: 'driver',
  returned: 'driver',
  cancelled: 'vendor',
};

/**
 * The legal moves: from each state, the steps that may follow. A `pickup` after the first one is
 * never published: the hub records it when a failed attempt goes back to the driver pool.
 */
export const TRANSITIONS: Readonly<Record<ParcelEvent, readonly ParcelEvent[]>> = {
  pickup: ['in-transit', 'delivered', 'cancelled'],
  'in-transit': ['delivered', 'failed', 'cancelled'],
  failed: ['returned'],
  delivered: [],
  returned: [],
  cancelled: [],
};

/**
 * Each step's place within an attempt: the longest way to it from `pickup` through TRANSITIONS
 * (pickup 0, in-transit 1, delivered, failed and cancelled 2, returned 3). Steps repeat across
 * attempts (a re-attempt records a pickup again), so a parcel's history is in order by attempt, then
 * by this, then by time. The pages get the same table from web/lifecycle.js
 * (tests/step-rank.test.ts checks that the two agree).
 */
export const STEP_RANK: Readonly<Record<ParcelEvent, number>> = rankSteps();

function rankSteps(): Record<ParcelEvent, number> {
  // TRANSITIONS has no cycle (a re-attempt's pickup is recorded by the hub, not a move), so this ends
  const rankOf = (event: ParcelEvent): number => (event === 'pickup' ? 0 : 1 + Math.max(...PARCEL_EVENTS.filter((from) => TRANSITIONS[from].includes(event)).map(rankOf)));
  return Object.fromEntries(PARCEL_EVENTS.map((event) => [event, rankOf(event)])) as Record<ParcelEvent, number>;
}

/** What a step does to a parcel: its state after, and whether a failed attempt goes back to the pool. */
export type Move = { ok: true; state: ParcelEvent; reattempt: boolean } | { ok: false; reason: string };

const IN_WORDS: Readonly<Record<ParcelEvent, string>> = {
  pickup: 'waiting for a driver',
  'in-transit': 'in transit',
  delivered: 'delivered',
  failed: 'failed, being returned',
  returned: 'returned to the store',
  cancelled: 'cancelled',
};

/** A state in plain words, for people (tracking pages, error messages). */
export function stateInWords(state: ParcelEvent): string {
  return IN_WORDS[state];
}

/**
 * The move `event` makes from `state` (undefined: the parcel does not exist yet). `attempt` is the
 * parcel's current attempt (1 for the first), `maxAttempts` its store's maximum, `reason` a failed
 * step's reason. Duplicates are the caller's to tell first (see isDuplicate).
 */
export function move(state: ParcelEvent | undefined, event: ParcelEvent, attempt = 1, maxAttempts = DEFAULT_MAX_ATTEMPTS, reason?: FailureReason): Move {
  if (state === undefined) return event === 'pickup' ? { ok: true, state: 'pickup', reattempt: false } : { ok: false, reason: 'no pickup was recorded for it' };
  if (!TRANSITIONS[state].includes(event)) return { ok: false, reason: `it is ${stateInWords(state)}: ${event} cannot follow` };
  if (event === 'failed') {
    const reattempt = attempt < maxAttempts && (reason === undefined || !FINAL_REASONS.has(reason));
    return { ok: true, state: reattempt ? 'pickup' : 'failed', reattempt };
  }
  return { ok: true, state: event, reattempt: false };
}

/** One step of a parcel's history, as far as the lifecycle cares. */
export interface LifecycleStep {
  event: ParcelEvent;
  /** The attempt it belongs to; absent means the first. */
  attempt?: number;
}

/** The parcel's current attempt: one per pickup in its history (a re-attempt records a pickup). */
export function attemptOf(history: readonly LifecycleStep[]): number {
  let pickups = 0;
  for (const step of history) if (step.event === 'pickup') pickups++;
  return Math.max(1, pickups);
}

/**
 * True when `event` was already recorded for this parcel, so that publishing it again is answered
 * as a duplicate and changes nothing: a pickup once the parcel exists; any other step already
 * recorded in the attempt it names (`attempt`), or, naming none, in the current attempt, or, when
 * the step cannot follow the current state, in the attempt before (a driver re-sending its
 * `failed` after the parcel went back to the pool). `current`: the parcel's attempt, when the
 * caller has counted it already.
 */
export function isDuplicate(history: readonly LifecycleStep[], state: ParcelEvent, event: ParcelEvent, attempt?: number, current = attemptOf(history)): boolean {
  if (event === 'pickup') return history.length > 0;
  const recorded = (n: number): boolean => history.some((step) => step.event === event && (step.attempt ?? 1) === n);
  if (attempt !== undefined) return attempt <= current && recorded(attempt);
  if (recorded(current)) return true;
  return !TRANSITIONS[state].includes(event) && current > 1 && recorded(current - 1);
}
