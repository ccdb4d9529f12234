// CAPS live board: loads recent parcels over the tracking API, then follows the hub live.
(() => {
  'use strict';
  const STATES = [
    ['pickup', 'Waiting for pickup'],
    ['in-transit', 'In transit'],
    ['delivered', 'Delivered'],
  ];
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
  const $ = (id) => document.getElementById(id);
  window.capsBoard = { loadedAt: Date.now(), parcels };

  function setStatus(text, kind) {
    $('status-text').textContent = text;
    $('status-dot').className = `dot ${kind}`;
  }

  async function api(path) {
    const res = await fetch(`/api${path}`, { headers });
    const body = await res.json();
    if (!body.ok) throw new Error(`${body.error.code}: ${body.error.message}`);
    return body.data;
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
      heading.textContent = label;
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
    card.setAttribute('aria-label', `Parcel ${parcel.orderId} for ${parcel.customer}: ${parcel.state}. Open its timeline.`);
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
    card.addEventListener('click', () => openTimeline(parcel.orderId, parcel.store));
    item.append(card);
    const list = section.querySelector(`.column[data-state="${parcel.state}"] .cards`);
    list.prepend(item);
    while (list.children.length > PER_COLUMN) list.lastElementChild.remove();
  }

  function upsert(parcel) {
    let byStore = parcels.get(parcel.store);
    if (!byStore) parcels.set(parcel.store, (byStore = new Map()));
    const known = byStore.get(parcel.orderId);
    const order = ['pickup', 'in-transit', 'delivered'];
    // a late update never moves a card backwards
    if (known && order.indexOf(known.state) > order.indexOf(parcel.state)) return;
    const merged = { ...known, ...parcel };
    byStore.set(parcel.orderId, merged);
    render(merged);
  }

  async function loadBoard() {
    const { stores } = await api('/stores');
    for (const { store } of stores) {
      const { packages } = await api(`/stores/${encodeURIComponent(store)}/packages?limit=${PER_COLUMN}`);
      for (const p of packages.reverse()) {
        const last = p.history[p.history.length - 1];
        upsert({ store: p.store, orderId: p.orderId, customer: p.customer, address: p.address, state: p.state, time: last?.time ?? '', driver: p.driver });
      }
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
      $('timeline-steps').replaceChildren(
        ...p.history.map((step) => {
          const li = document.createElement('li');
          li.dataset.event = step.event;
          li.textContent = `${step.event} at ${new Date(step.time).toLocaleString()}${step.driver ? ` by ${step.driver}` : ''}`;
          return li;
        }),
      );
    } catch (err) {
      $('timeline-who').textContent = `Could not load the timeline: ${err.message}`;
    }
  }

  function renderStats(stats) {
    $('eps').textContent = stats.eventsPerSecond === undefined ? '—' : String(stats.eventsPerSecond);
    $('driver-count').textContent = String(stats.clients.driver);
    $('vendor-count').textContent = String(stats.clients.vendor);
    $('drivers').replaceChildren(
      ...stats.drivers.map((d) => {
        const li = document.createElement('li');
        const name = document.createElement('span');
        name.textContent = d.name;
        const load = document.createElement('span');
        load.textContent = `${d.holding.length} parcel${d.holding.length === 1 ? '' : 's'}`;
        li.append(name, load);
        return li;
      }),
    );
    if (stats.drivers.length === 0) {
      const li = document.createElement('li');
      li.textContent = 'none';
      $('drivers').append(li);
    }
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
  socket.on('parcel', (u) => upsert({ store: u.store, orderId: u.orderId, customer: u.customer, address: u.address, state: u.event, time: u.time, driver: u.driver }));
  socket.on('stats', renderStats);
})();
