// CAPS tracking page: the hub rendered the parcel; this keeps it live over the link's own socket.
// It hears its one parcel only: a view once connected, each step, and while in transit where the
// driver is. The words match hub/tracking-page.ts.
(() => {
  'use strict';
  const ORDER = ['pickup', 'in-transit', 'delivered'];
  const HEADLINE = { pickup: 'Waiting for a driver', 'in-transit': 'On its way', delivered: 'Delivered' };
  const STEP = { pickup: 'The shop handed it over', 'in-transit': 'A driver picked it up', delivered: 'Delivered' };
  const $ = (id) => document.getElementById(id);
  const main = document.querySelector('main.track');
  const token = decodeURIComponent(location.pathname.split('/').pop() || '');
  if (!main || !$('steps') || !token) return;

  /** event → time: the steps heard so far, from the page as rendered, then from the hub. */
  const steps = new Map();
  for (const li of $('steps').querySelectorAll('li[data-event]')) {
    const time = li.querySelector('time')?.getAttribute('datetime');
    if (time) steps.set(li.dataset.event, time);
  }
  let position;
  window.capsTrack = { loadedAt: Date.now(), steps };

  const state = () => ORDER.filter((event) => steps.has(event)).at(-1) ?? main.dataset.state;

  function when(iso) {
    const at = new Date(iso);
    const time = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return at.toDateString() === new Date().toDateString() ? time : `${at.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${time}`;
  }

  function render() {
    const now = state();
    main.dataset.state = now;
    const delivered = steps.get('delivered');
    $('headline').textContent = now === 'delivered' && delivered ? `${HEADLINE.delivered} at ${when(delivered)}` : HEADLINE[now];
    $('steps').replaceChildren(
      ...ORDER.filter((event) => steps.has(event)).map((event) => {
        const li = document.createElement('li');
        li.dataset.event = event;
        const what = document.createElement('span');
        what.className = 'what';
        what.textContent = STEP[event];
        const time = document.createElement('time');
        time.dateTime = steps.get(event);
        time.textContent = when(steps.get(event));
        li.append(what, ' ', time);
        return li;
      }),
    );
    // a position means something only while the parcel is on its way
    const shown = now === 'in-transit' && position;
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
    for (const step of view.history) steps.set(step.event, step.time);
    position = view.position ?? position;
    render();
    // from here on the hub sends this page its parcel's news
    live('Live: this page updates by itself.', 'live');
  });
  socket.on('tracking-step', (step) => {
    steps.set(step.event, step.time);
    render();
  });
  socket.on('tracking-position', (p) => {
    position = p;
    render();
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
