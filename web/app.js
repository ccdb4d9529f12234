// CAPS live board: loads recent parcels over the tracking API, then follows the hub live.
(() => {
  'use strict';
  // every state of protocol/lifecycle.ts, one column each
  const STATES = [
    ['pickup', 'Waiting for pickup'],
    ['in-transit', 'In transit'],
    ['delivered', 'Delivered'],
    ['failed', 'Failed'],
    ['returned', 'Returned'],
    ['cancelled', 'Cancelled'],
  ];
  const STATE_WORDS = new Map(STATES);
  /**
   * A step's place within its attempt (protocol/lifecycle.ts STEP_RANK, served by the hub as /lifecycle.js):
   * events repeat across attempts (a re-attempt records a pickup again), so an event's name alone
   * says nothing of which step is newer.
   */
  const { rankOf } = window.CAPS_LIFECYCLE;
  const REASON_WORDS = {
    'recipient-absent': 'recipient absent',
    'address-not-found': 'address not found',
    refused: 'refused',
    damaged: 'damaged',
    'access-denied': 'access denied',
    other: 'other reason',
  };
  const PER_COLUMN = 40;
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get('token')) {
    sessionStorage.setItem('caps-token', hash.get('token'));
    // keep the token out of the address bar and the history
    history.replaceState(null, '', location.pathname + location.search);
  }
  const token = hash.get('token') || sessionStorage.getItem('caps-token') || undefined;
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  /** store → orderId → parcel */
  const parcels = new Map();
  /** store → its maximum of delivery attempts (GET /api/stores), for "attempt 2 of 3" */
  const maxAttempts = new Map();
  /** driver → its latest position heard live (`location`): what the hub sent this board, nothing else */
  const positions = new Map();
  /** A position older than this is shown as stale (a driver sends one every few seconds while it drives). */
  const STALE_MS = 2 * 60_000;
  const $ = (id) => document.getElementById(id);
  window.capsBoard = { loadedAt: Date.now(), parcels };

  function setStatus(text, kind) {
    $('status-text').textContent = text;
    $('status-dot').className = `dot ${kind}`;
  }

  /** The API's refusal: its code and message (never a stack trace on the page). */
  class ApiError extends Error {
    constructor(code, detail) {
      super(`${code}: ${detail}`);
      this.code = code;
    }
  }

  async function api(path) {
    const res = await fetch(`/api${path}`, { headers });
    let body;
    try {
      body = await res.json();
    } catch {
      throw new ApiError(`HTTP ${res.status}`, 'the hub did not answer with JSON');
    }
    if (!body?.ok) throw new ApiError(String(body?.error?.code ?? `HTTP ${res.status}`), String(body?.error?.message ?? 'no message'));
    return body.data;
  }

  /** Where a step stands in its parcel's story: its attempt, its rank in the attempt, its time. */
  function placeOf(step) {
    return { attempt: step.attempt ?? 1, rank: rankOf(step.event), time: String(step.time ?? '') };
  }

  function comparePlaces(a, b) {
    return a.attempt - b.attempt || a.rank - b.rank || a.time.localeCompare(b.time);
  }

  const stepOrder = (a, b) => comparePlaces(placeOf(a), placeOf(b));

  function ordinal(n) {
    const tens = n % 100;
    const suffix = tens >= 11 && tens <= 13 ? 'th' : ({ 1: 'st', 2: 'nd', 3: 'rd' }[n % 10] ?? 'th');
    return `${n}${suffix}`;
  }

  /** "attempt 2 of 3" once the store's maximum is known, "2nd attempt" until then. */
  function attemptWords(store, attempt) {
    const max = maxAttempts.get(store);
    return max === undefined ? `${ordinal(attempt)} attempt` : `attempt ${attempt} of ${max}`;
  }

  const reasonWords = (reason) => REASON_WORDS[reason] ?? String(reason ?? 'no reason given');

  /** A failed step's reason and note, for the card. */
  function failureOf(step) {
    if (!step) return undefined;
    return { attempt: step.attempt ?? 1, reason: step.details?.reason, note: step.details?.note };
  }

  /** A parcel of the board from its timeline (GET /api/..., its history in order): its state, attempt and last failure. */
  function fromTimeline(p) {
    const { history } = p;
    const last = history.at(-1);
    return {
      store: p.store,
      orderId: p.orderId,
      customer: p.customer,
      address: p.address,
      state: p.state,
      attempt: p.attempts ?? last?.attempt ?? 1,
      time: last?.time ?? '',
      driver: p.driver,
      failure: failureOf(history.filter((step) => step.event === 'failed').at(-1)),
      eta: p.state === 'in-transit' ? history.filter((step) => step.event === 'in-transit').at(-1)?.details?.eta : undefined,
      place: last ? placeOf(last) : { attempt: 1, rank: 0, time: '' },
    };
  }

  /**
   * A parcel of the board from a live step. The state is the update's: a failed attempt with
   * `reattempt` sends the parcel back to the drivers, waiting for its next attempt.
   */
  function fromUpdate(u, known) {
    const attempt = u.attempt ?? 1;
    const again = u.event === 'failed' && u.reattempt === true;
    const waiting = again || u.event === 'pickup';
    return {
      store: u.store,
      orderId: u.orderId,
      customer: u.customer,
      address: u.address,
      state: again ? 'pickup' : u.event,
      attempt: again ? attempt + 1 : attempt,
      time: u.time,
      // a parcel back in the pool is nobody's yet
      driver: waiting ? undefined : (u.driver ?? known?.driver),
      failure: u.event === 'failed' ? failureOf(u) : known?.failure,
      eta: u.event === 'in-transit' ? u.details?.eta : undefined,
      place: again ? { attempt: attempt + 1, rank: rankOf('pickup'), time: String(u.time) } : placeOf(u),
    };
  }

  function storeSection(store) {
    const id = `store-${CSS.escape(store)}`;
    let section = document.querySelector(`section.store[data-store="${CSS.escape(store)}"]`);
    if (section) return section;
    section = document.createElement('section');
    section.className = 'store';
    section.dataset.store = store;
    section.setAttribute('aria-labelledby', `${id}-title`);
    const title = document.createElement('h2');
    title.id = `${id}-title`;
    title.textContent = store;
    const columns = document.createElement('div');
    columns.className = 'columns';
    for (const [state, label] of STATES) {
      const column = document.createElement('div');
      column.className = 'column';
      column.dataset.state = state;
      const heading = document.createElement('h3');
      const count = document.createElement('span');
      count.className = 'count';
      heading.append(`${label} `, count);
      const list = document.createElement('ul');
      list.className = 'cards';
      list.setAttribute('aria-label', `${store}: ${label}`);
      column.append(heading, list);
      columns.append(column);
    }
    section.append(title, columns);
    const all = [...$('stores').children];
    const next = all.find((s) => s.dataset.store.localeCompare(store) > 0);
    $('stores').insertBefore(section, next ?? null);
    $('empty').hidden = true;
    return section;
  }

  function render(parcel) {
    const section = storeSection(parcel.store);
    const existing = document.querySelector(`.card[data-store="${CSS.escape(parcel.store)}"][data-order-id="${CSS.escape(parcel.orderId)}"]`);
    existing?.closest('li')?.remove();
    const item = document.createElement('li');
    const card = document.createElement('button');
    card.type = 'button';
    card.className = 'card';
    card.dataset.orderId = parcel.orderId;
    card.dataset.store = parcel.store;
    card.dataset.state = parcel.state;
    card.dataset.attempt = String(parcel.attempt);
    if (parcel.driver) card.dataset.driver = parcel.driver;
    if (isFound(parcel)) card.classList.add('found');
    // why it failed, while that still matters: waiting or on its way again, failed, returned
    const failure = parcel.state !== 'delivered' ? parcel.failure : undefined;
    const said = [`${STATE_WORDS.get(parcel.state) ?? parcel.state}`];
    if (parcel.attempt > 1) said.push(attemptWords(parcel.store, parcel.attempt));
    if (failure) said.push(`attempt ${failure.attempt} failed: ${reasonWords(failure.reason)}`);
    card.setAttribute('aria-label', `Parcel ${parcel.orderId} for ${parcel.customer}: ${said.join(', ')}. Open its timeline.`);
    const id = document.createElement('span');
    id.className = 'id';
    id.textContent = parcel.orderId.slice(0, 8);
    const customer = document.createElement('span');
    customer.className = 'customer';
    customer.textContent = parcel.customer;
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = `${new Date(parcel.time).toLocaleTimeString()}${parcel.driver ? ` · ${parcel.driver}` : ''}`;
    card.append(id, customer, meta);
    if (parcel.attempt > 1) {
      const badge = document.createElement('span');
      badge.className = 'badge attempt';
      badge.textContent = attemptWords(parcel.store, parcel.attempt);
      card.append(badge);
    }
    if (failure) {
      const why = document.createElement('span');
      why.className = 'failure';
      if (failure.reason) why.dataset.reason = failure.reason;
      why.textContent = `Attempt ${failure.attempt} failed: ${reasonWords(failure.reason)}`;
      if (failure.note) {
        const note = document.createElement('q');
        note.className = 'note';
        note.textContent = failure.note;
        why.append(' ', note);
      }
      card.append(why);
    }
    if (parcel.state === 'in-transit') {
      const eta = etaWords(parcel.eta);
      if (eta) {
        const expected = document.createElement('span');
        expected.className = 'eta';
        expected.textContent = `ETA ${eta}`;
        card.append(expected);
      }
      showWhere(card);
    }
    card.addEventListener('click', () => openTimeline(parcel.orderId, parcel.store));
    item.append(card);
    const list = section.querySelector(`.column[data-state="${parcel.state}"] .cards`);
    list.prepend(item);
    while (list.children.length > PER_COLUMN) list.lastElementChild.remove();
  }

  // ── drivers' positions ──────────────────────────────────────────────────────
  /** An ETA of a step's details as a time of day (a date too when not today); undefined if not a time. */
  function etaWords(eta) {
    const at = new Date(eta);
    if (eta === undefined || Number.isNaN(at.getTime())) return undefined;
    return at.toDateString() === new Date().toDateString() ? at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : at.toLocaleString();
  }

  const finite = (n) => typeof n === 'number' && Number.isFinite(n);

  /** A `location` as the board keeps it, or undefined if it is not one (the page trusts no payload's shape). */
  function positionOf(l) {
    if (typeof l?.driver !== 'string' || !finite(l.lat) || !finite(l.lng) || Math.abs(l.lat) > 90 || Math.abs(l.lng) > 180) return undefined;
    return {
      lat: l.lat,
      lng: l.lng,
      heading: finite(l.heading) ? l.heading : undefined,
      speed: finite(l.speed) ? l.speed : undefined,
      // its age is counted from when this page heard it: the hub relays it at once, and the two clocks may disagree
      heardAt: Date.now(),
    };
  }

  const coordinates = (p) => `${p.lat.toFixed(5)}, ${p.lng.toFixed(5)}`;
  const isStale = (p) => Date.now() - p.heardAt > STALE_MS;

  function ageWords(p) {
    const seconds = Math.max(0, Math.round((Date.now() - p.heardAt) / 1000));
    const ago = seconds < 120 ? `${seconds} s ago` : `${Math.round(seconds / 60)} min ago`;
    return isStale(p) ? `stale: updated ${ago}` : `updated ${ago}`;
  }

  function motionWords(p) {
    const said = [];
    if (p.heading !== undefined) said.push(`heading ${Math.round(p.heading)}°`);
    if (p.speed !== undefined) said.push(`${(p.speed * 3.6).toFixed(0)} km/h`);
    return said.join(', ');
  }

  /** The position of a card's driver on the card (in transit), or none once it has none. */
  function showWhere(card) {
    const p = card.dataset.state === 'in-transit' && card.dataset.driver !== undefined ? positions.get(card.dataset.driver) : undefined;
    let where = card.querySelector('.where');
    if (!p) {
      where?.remove();
      return;
    }
    if (!where) {
      where = document.createElement('span');
      where.className = 'where';
      card.append(where);
    }
    where.dataset.stale = String(isStale(p));
    where.textContent = `${card.dataset.driver} at ${coordinates(p)} · ${ageWords(p)}`;
  }

  function showWhereAll() {
    for (const card of document.querySelectorAll('.column[data-state="in-transit"] .card')) showWhere(card);
  }

  /** The in-transit cards of one driver: those a new position of theirs changes. */
  const cardsOf = (driver) => document.querySelectorAll(`.column[data-state="in-transit"] .card[data-driver="${CSS.escape(driver)}"]`);

  /** A position's lines in the drivers panel: where (a link to the map), which way and how fast, how old. */
  function positionItem(p) {
    const div = document.createElement('div');
    div.className = 'position';
    div.dataset.stale = String(isStale(p));
    const map = new URL('https://www.openstreetmap.org/');
    map.searchParams.set('mlat', String(p.lat));
    map.searchParams.set('mlon', String(p.lng));
    map.hash = `map=16/${p.lat}/${p.lng}`;
    const link = document.createElement('a');
    link.href = map.href;
    link.target = '_blank';
    link.rel = 'noopener noreferrer';
    link.className = 'coordinates';
    link.textContent = coordinates(p);
    div.append(link);
    const motion = motionWords(p);
    if (motion) {
      const span = document.createElement('span');
      span.className = 'motion';
      span.textContent = motion;
      div.append(span);
    }
    const age = document.createElement('span');
    age.className = 'age';
    age.textContent = ageWords(p);
    div.append(age);
    return div;
  }

  const known = (store, orderId) => parcels.get(store)?.get(orderId);

  function upsert(parcel) {
    let byStore = parcels.get(parcel.store);
    if (!byStore) parcels.set(parcel.store, (byStore = new Map()));
    const before = byStore.get(parcel.orderId);
    // a late update (or a page loaded after a live step) never moves a card backwards
    if (before && comparePlaces(parcel.place, before.place) < 0) return;
    byStore.set(parcel.orderId, parcel);
    render(parcel);
  }

  /** Each store's parcels per state, as the hub counts them (every parcel, not only those shown). */
  function showCounts(store, counts) {
    const section = storeSection(store);
    for (const [state] of STATES) {
      const count = section.querySelector(`.column[data-state="${state}"] .count`);
      if (count) count.textContent = String(counts?.[state] ?? 0);
    }
  }

  // the counts are asked again after live steps, at most once a second (counting is the storage's
  // work, and every open board asks); the answer to the latest request wins
  const counts = { timer: undefined, asked: 0, shown: 0 };
  function countSoon() {
    counts.timer ??= setTimeout(() => {
      counts.timer = undefined;
      const asked = ++counts.asked;
      api('/stores').then(
        ({ stores }) => {
          if (asked < counts.shown) return;
          counts.shown = asked;
          for (const s of stores) {
            learnMaxAttempts(s);
            showCounts(s.store, s.counts);
          }
        },
        // the next step asks again; the board itself is still live
        () => undefined,
      );
    }, 1_000);
  }

  /** A store's maximum of attempts, from its summary; its cards say "of N" from then on. */
  function learnMaxAttempts({ store, maxAttempts: max }) {
    if (!Number.isInteger(max) || max < 1 || maxAttempts.get(store) === max) return;
    maxAttempts.set(store, max);
    // the store's cards again, bottom up per column, so that each keeps its place
    const section = document.querySelector(`section.store[data-store="${CSS.escape(store)}"]`);
    for (const card of [...(section?.querySelectorAll('.card') ?? [])].reverse()) {
      const parcel = known(store, card.dataset.orderId);
      if (parcel) render(parcel);
    }
  }

  async function loadBoard() {
    const { stores } = await api('/stores');
    for (const summary of stores) learnMaxAttempts(summary);
    for (const { store, counts: byState } of stores) {
      showCounts(store, byState);
      const { packages } = await api(`/stores/${encodeURIComponent(store)}/packages?limit=${PER_COLUMN}`);
      for (const p of packages.reverse()) upsert(fromTimeline(p));
    }
  }

  async function openTimeline(orderId, store) {
    const dialog = $('timeline');
    $('timeline-title').textContent = `Parcel ${orderId}`;
    $('timeline-who').textContent = 'loading…';
    $('timeline-steps').replaceChildren();
    if (!dialog.open) dialog.showModal();
    try {
      const p = await api(`/packages/${encodeURIComponent(orderId)}?store=${encodeURIComponent(store)}`);
      $('timeline-who').textContent = `${p.customer}, ${p.address} · ${p.store}`;
      // the hub answers a history in order
      $('timeline-steps').replaceChildren(...p.history.map(stepItem));
    } catch (err) {
      $('timeline-who').textContent = `Could not load the timeline: ${err.message}`;
    }
  }

  const EVENT_WORDS = new Map([
    ['pickup', 'Ready for pickup'],
    ['in-transit', 'Picked up, in transit'],
    ['delivered', 'Delivered'],
    ['failed', 'Attempt failed'],
    ['returned', 'Returned to the store'],
    ['cancelled', 'Cancelled by the store'],
  ]);
  /** What a step's details say, in the order a reader wants them; every value is shown as text. */
  const DETAIL_WORDS = [
    ['reason', 'reason', reasonWords],
    ['note', 'note', String],
    ['recipient', 'received by', String],
    ['signature', 'signature', String],
    ['photo', 'photo', String],
    ['eta', 'expected', (eta) => new Date(eta).toLocaleString()],
    ['location', 'at', (at) => `${Number(at?.lat).toFixed(5)}, ${Number(at?.lng).toFixed(5)}`],
  ];

  /** One step of a timeline (the dialog's and the search's): what, which attempt, when, who, and its details. */
  function stepItem(step) {
    const li = document.createElement('li');
    li.dataset.event = step.event;
    if (step.attempt !== undefined) li.dataset.attempt = String(step.attempt);
    const what = document.createElement('span');
    what.className = 'event';
    const attempt = step.attempt ?? 1;
    what.textContent = `${EVENT_WORDS.get(step.event) ?? step.event}${attempt > 1 ? ` (${ordinal(attempt)} attempt)` : ''}`;
    const when = document.createElement('time');
    when.dateTime = step.time;
    when.textContent = ` ${new Date(step.time).toLocaleString()}`;
    li.append(what, when);
    if (step.driver) {
      const who = document.createElement('span');
      who.className = 'driver';
      who.textContent = ` · driver ${step.driver}`;
      li.append(who);
    }
    const details = step.details ?? {};
    const told = DETAIL_WORDS.filter(([key]) => details[key] !== undefined);
    if (told.length > 0) {
      const dl = document.createElement('dl');
      dl.className = 'details';
      for (const [key, term, words] of told) field(dl, term, words(details[key])).dataset.detail = key;
      li.append(dl);
    }
    return li;
  }

  // ── search by order id ──────────────────────────────────────────────────────
  /**
   * The search shown: its order id, the parcels found (one per store), `pending` while the API has
   * not answered (live steps heard meanwhile are kept in `heard` and applied to the answer).
   */
  const search = { orderId: undefined, results: [], error: undefined, pending: false, heard: [], seq: 0 };

  function isFound(parcel) {
    return search.orderId !== undefined && parcel.orderId === search.orderId && search.results.some((r) => r.store === parcel.store);
  }

  function cardOf(store, orderId) {
    return document.querySelector(`.card[data-store="${CSS.escape(store)}"][data-order-id="${CSS.escape(orderId)}"]`);
  }

  /** Each parcel with this order id the token may see: the API answers one, and takes ?store= for the others. */
  async function findAll(orderId) {
    const path = `/packages/${encodeURIComponent(orderId)}`;
    const orNone = (err) => {
      if (err instanceof ApiError && err.code === 'CAPS_ERR_NOT_FOUND') return undefined;
      throw err;
    };
    const first = await api(path).catch(orNone);
    if (!first) return [];
    // several stores may use the same order id: ask each other store this token may list
    let stores = [];
    try {
      ({ stores } = await api('/stores'));
    } catch {
      // a token that may not list stores sees the one parcel
    }
    const others = stores.map((s) => s.store).filter((store) => store !== first.store);
    const found = [first];
    // a few at a time, as a browser opens a few connections per host
    const workers = Array.from({ length: Math.min(4, others.length) }, async () => {
      for (let store = others.shift(); store !== undefined; store = others.shift()) {
        const p = await api(`${path}?store=${encodeURIComponent(store)}`).catch(orNone);
        if (p) found.push(p);
      }
    });
    await Promise.all(workers);
    return found.sort((a, b) => a.store.localeCompare(b.store));
  }

  async function runSearch(raw, { refresh = false } = {}) {
    const orderId = raw.trim();
    if (!orderId) {
      closeSearch();
      return;
    }
    const seq = ++search.seq;
    Object.assign(search, { orderId, pending: true, heard: [] });
    if (!refresh) {
      Object.assign(search, { results: [], error: undefined });
      $('search-summary').textContent = `Searching for order id ${orderId}…`;
      $('search-panel').hidden = true;
      markCards();
    }
    let results;
    let error;
    try {
      results = await findAll(orderId);
    } catch (err) {
      error = err instanceof ApiError ? err : new ApiError('network', err instanceof Error ? err.message : String(err));
    }
    // a newer search (or a close) replaced this one
    if (seq !== search.seq) return;
    Object.assign(search, { results: results ?? [], error, pending: false });
    for (const u of search.heard) applyStep(u);
    search.heard = [];
    renderSearch();
    markCards({ scroll: !refresh });
  }

  function closeSearch() {
    search.seq++;
    Object.assign(search, { orderId: undefined, results: [], error: undefined, pending: false, heard: [] });
    $('search-summary').textContent = '';
    $('search-panel').hidden = true;
    $('search-results').replaceChildren();
    markCards();
  }

  /** A live step of a parcel found: added to its timeline (once per attempt), never moving it backwards. */
  function applyStep(u) {
    const p = search.results.find((r) => r.store === u.store);
    if (!p) return false;
    const now = fromTimeline(p);
    const next = fromUpdate(u, now);
    const attempt = u.attempt ?? 1;
    if (!p.history.some((h) => h.event === u.event && (h.attempt ?? 1) === attempt)) {
      const step = { event: u.event, time: u.time };
      if (u.driver !== undefined) step.driver = u.driver;
      if (u.attempt !== undefined) step.attempt = u.attempt;
      if (u.details !== undefined) step.details = u.details;
      p.history.push(step);
      p.history.sort(stepOrder);
    }
    if (comparePlaces(next.place, now.place) >= 0) {
      p.state = next.state;
      p.attempts = Math.max(p.attempts ?? 1, next.attempt);
      if (next.driver === undefined) delete p.driver;
      else p.driver = next.driver;
    }
    return true;
  }

  function followSearch(u) {
    if (search.orderId === undefined || u.orderId !== search.orderId) return;
    if (search.pending) {
      search.heard.push(u);
      return;
    }
    if (applyStep(u)) {
      renderSearch();
      markCards();
    } else {
      // a parcel with this order id this search had not found (a new one, or another store's): ask again
      void runSearch(search.orderId, { refresh: true });
    }
  }

  function markCards({ scroll = false } = {}) {
    for (const card of document.querySelectorAll('.card.found')) card.classList.remove('found');
    let first;
    for (const r of search.results) {
      const card = cardOf(r.store, r.orderId);
      if (!card) continue;
      card.classList.add('found');
      first ??= card;
    }
    if (scroll) first?.scrollIntoView({ block: 'center' });
  }

  function field(dl, term, value) {
    const dt = document.createElement('dt');
    dt.textContent = term;
    const dd = document.createElement('dd');
    dd.textContent = value;
    dl.append(dt, dd);
    return dd;
  }

  function renderSearch() {
    const { orderId, results, error } = search;
    if (error) {
      $('search-summary').textContent = `Could not search for order id ${orderId}: ${error.message}`;
      $('search-panel').hidden = true;
      $('search-results').replaceChildren();
      return;
    }
    if (results.length === 0) {
      $('search-summary').textContent = `No parcel with order id ${orderId}`;
      $('search-panel').hidden = true;
      $('search-results').replaceChildren();
      return;
    }
    $('search-summary').textContent =
      results.length === 1
        ? `Order id ${orderId}: ${STATE_WORDS.get(results[0].state) ?? results[0].state} (${results[0].store})`
        : `Order id ${orderId}: ${results.length} parcels, in ${results.map((r) => r.store).join(', ')}`;
    $('search-title').textContent = `Order id ${orderId}`;
    $('search-results').replaceChildren(
      ...results.map((p) => {
        const article = document.createElement('article');
        article.className = 'found-parcel';
        article.dataset.store = p.store;
        article.dataset.orderId = p.orderId;
        article.dataset.state = p.state;
        const dl = document.createElement('dl');
        dl.className = 'found-fields';
        field(dl, 'Store', p.store);
        field(dl, 'Order id', p.orderId);
        field(dl, 'State', STATE_WORDS.get(p.state) ?? p.state).className = 'found-state';
        if ((p.attempts ?? 1) > 1) field(dl, 'Attempt', attemptWords(p.store, p.attempts)).className = 'found-attempt';
        field(dl, 'Customer', p.address ? `${p.customer}, ${p.address}` : p.customer);
        const steps = document.createElement('ol');
        steps.className = 'steps';
        steps.setAttribute('aria-label', `Timeline of ${p.orderId} (${p.store})`);
        steps.append(...p.history.map(stepItem));
        article.append(dl, steps);
        return article;
      }),
    );
    $('search-panel').hidden = false;
  }

  $('search-form').addEventListener('submit', (event) => {
    // never a navigation (the page's CSP has form-action 'none')
    event.preventDefault();
    void runSearch($('search-id').value);
  });
  $('search-id').addEventListener('input', () => {
    if ($('search-id').value.trim() === '') closeSearch();
  });
  $('search-close').addEventListener('click', () => {
    $('search-id').value = '';
    closeSearch();
    $('search-id').focus();
  });

  /** The drivers of the latest stats (those this board may see), each with its position if it sent one. */
  let drivers = [];
  /** What the drivers panel lists (each driver's name and load): the stats come every second, mostly the same. */
  let listedDrivers;

  function renderDrivers() {
    $('drivers').replaceChildren(
      ...drivers.map((d) => {
        const li = document.createElement('li');
        li.dataset.driver = d.name;
        const name = document.createElement('span');
        name.className = 'name';
        name.textContent = d.name;
        const load = document.createElement('span');
        load.textContent = `${d.holding.length} parcel${d.holding.length === 1 ? '' : 's'}`;
        li.append(name, load);
        const p = positions.get(d.name);
        if (p) li.append(positionItem(p));
        return li;
      }),
    );
    if (drivers.length === 0) {
      const li = document.createElement('li');
      li.textContent = 'none';
      $('drivers').append(li);
    }
  }

  /**
   * A driver's new position, in its own line of the panel and on its cards in transit: the rest of
   * the panel and board is left alone (a driver sends one every few seconds). A driver not in the
   * panel (not in the latest stats) is shown once the next stats list it.
   */
  function showDriver(driver) {
    const p = positions.get(driver);
    const li = $('drivers').querySelector(`li[data-driver="${CSS.escape(driver)}"]`);
    if (li && p) {
      const shown = li.querySelector('.position');
      if (shown) shown.replaceWith(positionItem(p));
      else li.append(positionItem(p));
    }
    for (const card of cardsOf(driver)) showWhere(card);
  }

  /** How old each shown position is, and whether it is stale: the one thing the clock changes. */
  function showAges() {
    for (const div of $('drivers').querySelectorAll('li[data-driver] > .position')) {
      const p = positions.get(div.parentElement.dataset.driver);
      if (!p) continue;
      div.dataset.stale = String(isStale(p));
      const age = div.querySelector('.age');
      if (age) age.textContent = ageWords(p);
    }
    for (const where of document.querySelectorAll('.column[data-state="in-transit"] .card .where')) showWhere(where.closest('.card'));
  }

  function renderStats(stats) {
    $('eps').textContent = stats.eventsPerSecond === undefined ? '—' : String(stats.eventsPerSecond);
    $('driver-count').textContent = String(stats.clients.driver);
    $('vendor-count').textContent = String(stats.clients.vendor);
    drivers = Array.isArray(stats.drivers) ? stats.drivers : [];
    // a driver gone (offline, or no longer holding a parcel this board may see) leaves with its position
    const listed = new Set(drivers.map((d) => d.name));
    let forgot = false;
    for (const name of positions.keys()) {
      if (!listed.has(name)) forgot = positions.delete(name);
    }
    // positions are kept up to date by `location` and the clock: the panel is redrawn when its list changes
    const listing = JSON.stringify(drivers.map((d) => [d.name, d.holding.length]));
    if (listing !== listedDrivers) {
      listedDrivers = listing;
      renderDrivers();
    }
    if (forgot) showWhereAll();
    $('queues').replaceChildren(
      ...stats.queues.map((q) => {
        const tr = document.createElement('tr');
        for (const text of [q.queue, String(q.depth), q.depth ? `${Math.round(q.oldestAgeSeconds)} s` : '–']) {
          const td = document.createElement('td');
          td.textContent = text;
          tr.append(td);
        }
        return tr;
      }),
    );
  }

  const socket = io('/caps', { auth: token ? { token, role: 'dashboard' } : { role: 'dashboard' }, transports: ['websocket'] });
  socket.on('connect', () => {
    setStatus('live', 'live');
    loadBoard().catch((err) => setStatus(`cannot load parcels: ${err.message}`, 'down'));
  });
  socket.on('disconnect', () => setStatus('reconnecting…', 'down'));
  socket.on('connect_error', (err) => {
    const code = err.data?.code;
    if (code === 'CAPS_ERR_UNAUTHORIZED' || code === 'CAPS_ERR_TOKEN_EXPIRED') {
      setStatus(`${code}: open this page with #token=… (caps token --role dashboard)`, 'down');
    } else {
      setStatus(`cannot reach the hub: ${err.message}`, 'down');
    }
  });
  socket.on('parcel', (u) => {
    upsert(fromUpdate(u, known(u.store, u.orderId)));
    followSearch(u);
    countSoon();
  });
  socket.on('stats', renderStats);
  socket.on('location', (l) => {
    const p = positionOf(l);
    if (!p) return;
    positions.set(l.driver, p);
    showDriver(l.driver);
  });
  // ages and staleness move on between positions (and while the hub is away)
  setInterval(() => {
    if (positions.size === 0) return;
    showAges();
  }, 1_000);
})();
