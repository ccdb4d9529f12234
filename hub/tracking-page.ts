import type { Response } from 'express';
import { Router } from 'express';
import { CapsError } from '../protocol/errors.js';
import type { FailureReason } from '../protocol/lifecycle.js';
import type { ParcelEvent } from '../protocol/schemas.js';
import type { TrackingStep, TrackingView } from '../protocol/messages.js';
import type { Keyring } from './keyring.js';
import type { Metrics } from './metrics.js';
import type { Storage } from './storage/storage.js';
import { trackingView } from './tracking.js';

export interface TrackingPageOptions {
  storage: Storage;
  metrics: Metrics;
  /** The token keys and revocations; undefined: a hub with no secret, where no link works. */
  keyring: Keyring | undefined;
}

/**
 * What the page says of each state, of each step in its timeline, and of why an attempt failed.
 * web/track.js says the same: the hub hands it these words in /lifecycle.js (TRACKING_WORDS).
 */
const HEADLINE: Record<ParcelEvent, string> = {
  pickup: 'Waiting for a driver',
  'in-transit': 'On its way',
  delivered: 'Delivered',
  failed: 'A delivery attempt failed',
  returned: 'Returned to the shop',
  cancelled: 'Cancelled by the shop',
};
const STEP: Record<ParcelEvent, string> = {
  pickup: 'The shop handed it over',
  'in-transit': 'A driver picked it up',
  delivered: 'Delivered',
  failed: 'A delivery attempt failed',
  returned: 'Returned to the shop',
  cancelled: 'Cancelled by the shop',
};
/** A re-attempt's pickup: the parcel is back with the drivers. */
const STEP_AGAIN = 'Back with the drivers for another try';
const REASON: Record<FailureReason, string> = {
  'recipient-absent': 'nobody was home',
  'address-not-found': 'the address could not be found',
  refused: 'the parcel was refused',
  damaged: 'the parcel was damaged',
  'access-denied': 'the driver could not get in',
  other: 'the driver could not deliver it',
};

/** The words web/track.js keeps the page live with (served in /lifecycle.js, hub/lifecycle-script.ts). */
export const TRACKING_WORDS = { headline: HEADLINE, step: STEP, again: STEP_AGAIN, reason: REASON } as const;

/** "A delivery attempt failed: nobody was home" (or without the reason, when none was given). */
function failedWords(step: TrackingStep | undefined): string {
  return step?.reason !== undefined ? `${STEP.failed}: ${REASON[step.reason]}` : STEP.failed;
}

function stepWords(step: TrackingStep): string {
  if (step.event === 'pickup' && (step.attempt ?? 1) > 1) return STEP_AGAIN;
  if (step.event === 'failed') return failedWords(step);
  return STEP[step.event];
}

/** The headline: the state in words; after a failed attempt, why, and what happens next. */
function headlineOf(view: TrackingView): string {
  const last = view.history.at(-1);
  const failure = view.history.filter((step) => step.event === 'failed').at(-1);
  if (view.state === 'delivered' && last) return `${HEADLINE.delivered} at ${utc(last.time)}`;
  if (view.state === 'pickup' && failure) return `${failedWords(failure)}. The driver will try again.`;
  if (view.state === 'failed') return `${failedWords(failure)}. It is going back to the shop.`;
  return HEADLINE[view.state];
}

/**
 * `GET /track/<token>`: a customer's tracking page, rendered whole on the hub (it reads without
 * script), then kept live by web/track.js over the tracking link's own socket. Any link that does
 * not work (malformed, another secret, expired, revoked, not a tracking link, a parcel unknown)
 * gets the same plain 404 page: a stranger cannot tell which, and no error detail reaches a page.
 */
export function trackingPage(options: TrackingPageOptions): Router {
  const page = Router();
  page.get('/track/:token', async (req, res) => {
    // the link is a secret: not cached, not indexed
    res.set({ 'Cache-Control': 'no-store', 'X-Robots-Tag': 'noindex' });
    try {
      if (!options.keyring) throw new CapsError('CAPS_ERR_NOT_FOUND', 'this hub has no secret: no tracking link works');
      const claims = options.keyring.verify(req.params['token']);
      if (claims.role !== 'tracker') throw new CapsError('CAPS_ERR_NOT_FOUND', 'not a tracking link');
      const parcel = await options.storage.parcel(claims.store, claims.orderId);
      if (!parcel) throw new CapsError('CAPS_ERR_NOT_FOUND', 'no such parcel');
      send(res, 200, parcelPage(trackingView(parcel)));
    } catch (err) {
      const code = err instanceof CapsError ? err.code : 'CAPS_ERR_INTERNAL';
      options.metrics.refuse(code);
      if (code === 'CAPS_ERR_STORAGE' || code === 'CAPS_ERR_INTERNAL' || !(err instanceof CapsError)) {
        send(res, 503, notice('Tracking is not available right now', 'Please try again in a few minutes.'));
        return;
      }
      send(res, 404, notice('This tracking link does not work', 'It may have expired or been withdrawn. Ask the shop for a new link.'));
    }
  });
  return page;
}

function send(res: Response, status: number, html: string): void {
  res.status(status).type('html').send(html);
}

function parcelPage(view: TrackingView): string {
  const steps = view.history.map(stepItem).join('');
  const eta = view.state === 'in-transit' ? view.history.at(-1)?.eta : undefined;
  return layout(
    'Your parcel',
    `<main class="track" data-state="${view.state}">
<p class="from">Parcel <strong id="order">${escape(view.orderId)}</strong> from <strong id="store">${escape(view.store)}</strong></p>
<h1 id="headline" role="status" aria-live="polite">${escape(headlineOf(view))}</h1>
<p id="eta" class="eta"${eta === undefined ? ' hidden' : ''}>${eta === undefined ? '' : `Expected by ${escape(utc(eta))}`}</p>
<p id="position" class="position" hidden></p>
<h2>So far</h2>
<ol id="steps" class="steps">${steps}</ol>
<p id="live" class="live">Connecting for live updates…</p>
</main>
<script src="/socket.io/socket.io.min.js"></script>
<script src="/lifecycle.js"></script>
<script src="/track.js"></script>`,
  );
}

/** A step of the list, with what web/track.js needs to keep it (attempt, reason, ETA) in data attributes. */
function stepItem(step: TrackingStep): string {
  const data = [`data-event="${step.event}"`];
  if (step.attempt !== undefined) data.push(`data-attempt="${step.attempt}"`);
  if (step.reason !== undefined) data.push(`data-reason="${escape(step.reason)}"`);
  if (step.eta !== undefined) data.push(`data-eta="${escape(step.eta)}"`);
  const eta = step.eta !== undefined ? ` <span class="eta">expected by ${escape(utc(step.eta))}</span>` : '';
  return `<li ${data.join(' ')}><span class="what">${escape(stepWords(step))}</span> <time datetime="${escape(step.time)}">${escape(utc(step.time))}</time>${eta}</li>`;
}

function notice(title: string, text: string): string {
  return layout(title, `<main class="track notice">\n<h1>${escape(title)}</h1>\n<p>${escape(text)}</p>\n</main>`);
}

function layout(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${escape(title)} · CAPS</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/track.css">
</head>
<body>
${body}
</body>
</html>
`;
}

/** `14:02 UTC` today, `3 May 14:02 UTC` before: the hub does not know the reader's time zone (the script does). */
function utc(iso: string): string {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return iso;
  const time = at.toISOString().slice(11, 16);
  const sameDay = at.toISOString().slice(0, 10) === new Date().toISOString().slice(0, 10);
  return sameDay ? `${time} UTC` : `${at.getUTCDate()} ${MONTHS[at.getUTCMonth()] ?? ''} ${time} UTC`;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
