#!/usr/bin/env node
/**
 * The load generator of `caps bench`, run as a child process (forked, with an IPC channel).
 * V vendors publish pickups and keep K parcels in flight each (closed loop), or publish at a fixed
 * total rate (open loop); D drivers acknowledge each pickup and publish in-transit and delivered
 * at once. Raw socket.io-client, websocket transport only, every publish with an ack.
 */
import { performance } from 'node:perf_hooks';
import { io } from 'socket.io-client';
import type { Socket } from 'socket.io-client';
import type { LoadConfig, LoadResult, LoadToParent } from './protocol.js';
import { summarize } from './stats.js';

type Ack = (result?: unknown) => void;
interface AckResultLike {
  ok?: boolean;
  error?: { code?: string; message?: string };
}
interface Parcel {
  store?: string;
  orderId?: string;
  messageId?: string;
  event?: string;
}

const config = JSON.parse(process.argv[2] ?? '{}') as LoadConfig;
const send = (message: LoadToParent): void => {
  process.send?.(message);
};
// the bench went away mid-run (killed, interrupted): nobody is left to report to
process.on('disconnect', () => {
  if (!stopped) process.exit(1);
});

const CUSTOMER = 'Bench Customer';
const ADDRESS = '1 Benchmark Road, Testville';
const CONNECT_TIMEOUT_MS = 15_000;

let measuring = false;
let stopped = false;
let parcels = 0;
let delivered = 0;
let events = 0;
let errors = 0;
let firstError: string | undefined;
const latencies: number[] = [];

function problem(text: string): void {
  errors++;
  firstError ??= text;
}

/** The hub of the i-th vendor or driver: with several, round-robin. */
function urlOf(i: number): string {
  const urls = config.urls ?? [];
  return urls.length > 0 ? (urls[i % urls.length] ?? config.url) : config.url;
}

function connect(auth: Record<string, string>, url: string): Socket {
  return io(`${url}/caps`, { auth, transports: ['websocket'], forceNew: true, reconnection: false, timeout: CONNECT_TIMEOUT_MS });
}

function connected(socket: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', (err) => reject(new Error(`${config.label}: cannot connect: ${err.message}`)));
  });
}

const lab = config.protocol === 'lab';

/** The course's way to take a message off its queue: `received`, instead of a Socket.IO ack. */
function received(socket: Socket, queue: string, m: Parcel): void {
  socket.emit('received', { clientId: queue, messageId: m.messageId, event: m.event });
}

class BenchVendor {
  readonly socket: Socket;
  /** orderId → when it was due (open loop) or sent (closed loop), performance.now() ms. */
  readonly started = new Map<string, number>();
  private n = 0;

  constructor(
    readonly store: string,
    url: string,
  ) {
    // a lab vendor says nothing in the handshake: it joins its store's room
    this.socket = connect(lab ? {} : { role: 'vendor', store }, url);
    if (lab) this.socket.emit('join', store);
    this.socket.on('in-transit', (m: Parcel, ack?: Ack) => {
      if (measuring) events++;
      if (lab) received(this.socket, store, m);
      else ack?.({ ok: true });
    });
    this.socket.on('delivered', (m: Parcel, ack?: Ack) => {
      if (lab) received(this.socket, store, m);
      else ack?.({ ok: true });
      const orderId = m.orderId ?? '';
      const t0 = this.started.get(orderId);
      if (t0 === undefined) return; // a copy of one already counted
      this.started.delete(orderId);
      delivered++;
      if (measuring) {
        events++;
        parcels++;
        latencies.push(performance.now() - t0);
      }
      if (config.rate === 0) this.publish(performance.now());
    });
  }

  publish(due: number): void {
    if (stopped) return;
    const orderId = `${this.store}-${++this.n}`;
    this.started.set(orderId, due);
    if (lab) {
      // fire and forget, as the course's vendors do: nothing says whether it was taken
      this.socket.emit('pickup', { store: this.store, orderId, customer: CUSTOMER, address: ADDRESS });
      if (measuring) events++;
      return;
    }
    this.socket.emit('pickup', { store: this.store, orderId, customer: CUSTOMER, address: ADDRESS }, (r: AckResultLike) => {
      if (r?.ok) {
        if (measuring) events++;
        return;
      }
      this.started.delete(orderId);
      problem(`pickup refused: ${r?.error?.code ?? 'no result'} ${r?.error?.message ?? ''}`);
      // keep the loop going in closed-loop mode
      if (config.rate === 0) setTimeout(() => this.publish(performance.now()), 10);
    });
  }
}

/** The course's driver: joins the pool, says received, and re-emits the pickup as its two steps. */
function startLabDriver(): Socket {
  const socket = connect({}, urlOf(0));
  socket.emit('join', 'driver');
  socket.on('pickup', (m: Parcel) => {
    if (measuring) events += 3;
    received(socket, 'driver', m);
    socket.emit('in-transit', m);
    socket.emit('delivered', m);
  });
  return socket;
}

function startDriver(name: string, url: string): Socket {
  const socket = connect({ role: 'driver', name }, url);
  const stepAck = (r: AckResultLike): void => {
    if (r?.ok) {
      if (measuring) events++;
    } else problem(`step refused: ${r?.error?.code ?? 'no result'} ${r?.error?.message ?? ''}`);
  };
  socket.on('pickup', (m: Parcel, ack?: Ack) => {
    if (measuring) events++;
    ack?.({ ok: true });
    const step = { store: m.store, orderId: m.orderId };
    socket.emit('in-transit', step, stepAck);
    socket.emit('delivered', step, stepAck);
  });
  return socket;
}

async function main(): Promise<void> {
  // the lab's hub sends every pickup to every driver: its protocol has one
  const drivers = lab ? [startLabDriver()] : Array.from({ length: config.drivers }, (_, i) => startDriver(`bench-driver-${i + 1}`, urlOf(i)));
  const vendors = Array.from({ length: config.vendors }, (_, i) => new BenchVendor(`bench-store-${i + 1}`, urlOf(i)));
  const sockets = [...drivers, ...vendors.map((v) => v.socket)];
  await Promise.all(sockets.map(connected));
  for (const socket of sockets) socket.on('disconnect', (reason) => !stopped && problem(`disconnected: ${reason}`));
  send({ type: 'connected' });

  const t0 = performance.now();
  let openLoop: NodeJS.Timeout | undefined;
  if (config.rate === 0) {
    for (const vendor of vendors) for (let k = 0; k < config.inflight; k++) vendor.publish(performance.now());
  } else {
    // open loop: each parcel has a due time; latency counts from it, so a stalled hub is not hidden
    const interval = 1000 / config.rate;
    let issued = 0;
    openLoop = setInterval(() => {
      const now = performance.now();
      while (t0 + issued * interval <= now) {
        const vendor = vendors[issued % vendors.length];
        vendor?.publish(t0 + issued * interval);
        issued++;
      }
    }, 1);
  }

  const progress = setInterval(() => {
    const elapsedMs = performance.now() - t0;
    send({ type: 'progress', phase: measuring ? 'measure' : 'warmup', elapsedMs, parcels, errors });
  }, 1000);

  await new Promise((resolve) => setTimeout(resolve, config.warmupMs));
  measuring = true;
  const m0 = performance.now();
  send({ type: 'measure-start' });
  await new Promise((resolve) => setTimeout(resolve, config.measureMs));
  measuring = false;
  const seconds = (performance.now() - m0) / 1000;
  send({ type: 'measure-end' });
  stopped = true;
  clearInterval(progress);
  if (openLoop) clearInterval(openLoop);

  let outstanding = 0;
  for (const vendor of vendors) outstanding += vendor.started.size;
  const result: LoadResult = { parcels, delivered, events, seconds, latency: summarize(latencies), errors, outstanding, ...(firstError ? { firstError } : {}) };
  send({ type: 'result', result });
  for (const socket of sockets) socket.disconnect();
  process.disconnect?.();
}

main().catch((err: unknown) => {
  send({ type: 'failed', message: err instanceof Error ? err.message : String(err) });
  process.exitCode = 1;
  setTimeout(() => process.exit(1), 200).unref();
});
