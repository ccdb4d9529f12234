// CAPS tracking page: the hub rendered the parcel; this keeps it live over the link's own socket.
// It hears its one parcel only: a view once connected, each step, and while in transit where the
// driver is. Its words are the hub's (hub/tracking-page.ts), from /lifecycle.js.
(() => {
  'use strict';
  // a step's place within its attempt (steps repeat across attempts), and the page's words: the
  // hub's own, served as /lifecycle.js (hub/lifecycle-script.ts)
  const { rankOf, words } = window.CAPS_LIFECYCLE;
  const { headline: HEADLINE, step: STEP, again: STEP_AGAIN, reason: REASON } = words;
  const $ = (id) => document.getElementById(id);
  const main = document.querySelector('main.track');
  const token = decodeURIComponent(location.pathname.split('/').pop() || '');
  if (!main || !$('steps') || !token) return;

  /** attempt:event → step: each step heard so far (once, though heard twice), from the page as rendered, then from the hub. */
  const steps = new Map();
  function keep(step) {
    if (typeof step?.event !== 'string' || typeof step.time !== 'string') return;
    const attempt = Number.isInteger(step.attempt) && step.attempt > 1 ? step.attempt : 1;
    const key = `${attempt}:${step.event}`;
    // a re-attempt said live is kept when the same failure comes again from the stored view
    const reattempt = step.reattempt === true || steps.get(key)?.reattempt === true;
    steps.set(key, { event: step.event, time: step.time, attempt, reason: step.reason, eta: step.eta, reattempt });
  }
  for (const li of $('steps').querySelectorAll('li[data-event]')) {
    const time = li.querySelector('time')?.getAttribute('datetime');
    if (time) keep({ event: li.dataset.event, time, attempt: Number(li.dataset.attempt ?? 1), reason: li.dataset.reason, eta: li.dataset.eta });
  }
  let position;
  window.capsTrack = { loadedAt: Date.now(), steps };

  /** A parcel's steps in order: by attempt, then by place within it, then by time. */
  const stepOrder = (a, b) => a.attempt - b.attempt || rankOf(a.event) - rankOf(b.event) || a.time.localeCompare(b.time);
  const story = () => [...steps.values()].sort(stepOrder);

  /** The parcel's state: its last step's, except a failure that sent it back to the drivers. */
  function stateOf(list) {
    const last = list.at(-1);
    if (!last) return main.dataset.state;
    return last.event === 'failed' && last.reattempt ? 'pickup' : last.event;
  }

  const failedWords = (step) => (step && REASON[step.reason] ? `${STEP.failed}: ${REASON[step.reason]}` : STEP.failed);

  function stepWords(step) {
    if (step.event === 'pickup' && step.attempt > 1) return STEP_AGAIN;
    if (step.event === 'failed') return failedWords(step);
    return STEP[step.event] ?? step.event;
  }

  function headlineOf(now, list) {
    const failure = list.filter((step) => step.event === 'failed').at(-1);
    const delivered = list.find((step) => step.event === 'delivered');
    if (now === 'delivered' && delivered) return `${HEADLINE.delivered} at ${when(delivered.time)}`;
    if (now === 'pickup' && failure) return `${failedWords(failure)}. The driver will try again.`;
    if (now === 'failed') return `${failedWords(failure)}. It is going back to the shop.`;
    return HEADLINE[now] ?? now;
  }

  function when(iso) {
    const at = new Date(iso);
    const time = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return at.toDateString() === new Date().toDateString() ? time : `${at.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${time}`;
  }

  function render() {
    const list = story();
    const now = stateOf(list);
    main.dataset.state = now;
    $('headline').textContent = headlineOf(now, list);
    const eta = now === 'in-transit' ? list.at(-1)?.eta : undefined;
    $('eta').hidden = eta === undefined;
    $('eta').textContent = eta === undefined ? '' : `Expected by ${when(eta)}`;
    $('steps').replaceChildren(
      ...list.map((step) => {
        const li = document.createElement('li');
        li.dataset.event = step.event;
        if (step.attempt > 1) li.dataset.attempt = String(step.attempt);
        if (step.reason !== undefined) li.dataset.reason = step.reason;
        if (step.eta !== undefined) li.dataset.eta = step.eta;
        const what = document.createElement('span');
        what.className = 'what';
        what.textContent = stepWords(step);
        const time = document.createElement('time');
        time.dateTime = step.time;
        time.textContent = when(step.time);
        li.append(what, ' ', time);
        if (step.eta !== undefined) {
          const expected = document.createElement('span');
          expected.className = 'eta';
          expected.textContent = `expected by ${when(step.eta)}`;
          li.append(' ', expected);
        }
        return li;
      }),
    );
    renderPosition();
  }

  /** Where the driver is: the one thing a position changes (no steps to sort, no headline to announce again). */
  function renderPosition() {
    // a position means something only while the parcel is on its way
    const shown = main.dataset.state === 'in-transit' && position;
    $('position').hidden = !shown;
    if (!shown) {
      $('position').replaceChildren();
      return;
    }
    const lat = `${Math.abs(position.lat).toFixed(4)}°${position.lat >= 0 ? 'N' : 'S'}`;
    const lng = `${Math.abs(position.lng).toFixed(4)}°${position.lng >= 0 ? 'E' : 'W'}`;
    const map = document.createElement('a');
    map.href = `https://www.openstreetmap.org/?mlat=${position.lat}&mlon=${position.lng}#map=16/${position.lat}/${position.lng}`;
    map.rel = 'noopener noreferrer';
    map.target = '_blank';
    map.textContent = 'see it on a map';
    $('position').replaceChildren(`The driver is at ${lat}, ${lng} (as of ${when(position.time)}): `, map);
  }

  function live(text, kind) {
    $('live').textContent = text;
    $('live').dataset.kind = kind;
  }

  render();
  const socket = io('/caps', { auth: { token }, transports: ['websocket'] });
  socket.on('connect', () => live('Connected…', 'connecting'));
  socket.on('tracking', (view) => {
    // merged, not replaced: a step heard just before this view may be newer than it
    for (const step of view.history) keep(step);
    position = view.position ?? position;
    render();
    // from here on the hub sends this page its parcel's news
    live('Live: this page updates by itself.', 'live');
  });
  socket.on('tracking-step', (step) => {
    keep(step);
    render();
  });
  socket.on('tracking-position', (p) => {
    position = p;
    renderPosition();
  });
  socket.on('disconnect', (reason) => {
    live('Reconnecting…', 'down');
    // the hub hung up (a withdrawn or expired link, or a restart): asking again tells which
    if (reason === 'io server disconnect') socket.connect();
  });
  socket.on('connect_error', (err) => {
    const code = err.data && err.data.code;
    if (code === 'CAPS_ERR_UNAUTHORIZED' || code === 'CAPS_ERR_TOKEN_EXPIRED' || code === 'CAPS_ERR_NOT_FOUND') {
      socket.disconnect();
      position = undefined;
      render();
      live('This tracking link no longer works: ask the shop for a new one.', 'gone');
    } else {
      live('Reconnecting…', 'down');
    }
  });
})();
