import { EventEmitter } from 'node:events';
import { io } from 'socket.io-client';
import type { Socket } from 'socket.io-client';
import type { Hub, HubOptions } from '../../hub/hub.js';
import { createHub } from '../../hub/hub.js';
import { createLogger } from '../../hub/logger.js';
import type { ParcelMessage } from '../../protocol/messages.js';
import { Lines, waitUntil } from './wait.js';
import type { TokenSubject } from '../../protocol/token.js';
import { signToken } from '../../protocol/token.js';

export interface TestHub {
  hub: Hub;
  url: string;
  /** Every line the hub logged (JSON lines, so tests can parse fields). */
  logs: Lines;
  close(): Promise<void>;
}

/** A real hub on 127.0.0.1 and a free port, logging JSON lines into memory. */
export async function startHub(options: Partial<HubOptions> = {}): Promise<TestHub> {
  const logs = new Lines();
  const hub = await createHub({
    port: 0,
    host: '127.0.0.1',
    allowAnonymous: true,
    storage: 'memory',
    logger: createLogger({ format: 'json', write: logs.push }),
    ...options,
  });
  return { hub, url: hub.url, logs, close: () => hub.close() };
}

export const TEST_SECRET = 'test-secret-0123456789abcdef';

/** A hub that requires tokens signed with TEST_SECRET (the default outside lab mode). */
export function startSecureHub(options: Partial<HubOptions> = {}): Promise<TestHub> {
  return startHub({ allowAnonymous: false, secret: TEST_SECRET, ...options });
}

/** A token for the secure test hub. */
export function tokenFor(subject: TokenSubject, options: { expiresInSeconds?: number; now?: number; secret?: string } = {}): string {
  return signToken(options.secret ?? TEST_SECRET, subject, options);
}

/** Parsed JSON log records with `msg` equal to `message`. */
export function records(logs: Lines, message: string): Array<Record<string, unknown>> {
  return logs.all.map((line) => JSON.parse(line) as Record<string, unknown>).filter((r) => r['msg'] === message);
}

/**
 * A raw socket.io-client on `/caps`, as the course's own clients connect (no CAPS client code),
 * that records everything it receives.
 */
export class RawClient extends EventEmitter {
  readonly socket: Socket;
  readonly received: Array<{ event: string; payload: ParcelMessage }> = [];

  constructor(url: string, opts: { auth?: Record<string, string>; autoAck?: boolean; defaultTransports?: boolean } = {}) {
    super();
    // the course's clients use socket.io-client's defaults: long-polling first, then websocket
    const transports = opts.defaultTransports ? {} : { transports: ['websocket'] };
    this.socket = io(`${url}/caps`, { forceNew: true, ...transports, auth: opts.auth ?? {} });
    this.socket.onAny((event: string, payload: ParcelMessage, ack?: unknown) => {
      if (opts.autoAck !== false && typeof ack === 'function') (ack as (r: unknown) => void)({ ok: true });
      this.received.push({ event, payload });
      this.emit('message');
    });
  }

  /** Resolves with the hub's refusal (`connect_error` data) of this connection. */
  refused(timeoutMs = 5_000): Promise<{ code?: string; message?: string }> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for connect_error')), timeoutMs);
      this.socket.once('connect_error', (err: Error & { data?: { code?: string; message?: string } }) => {
        clearTimeout(timer);
        resolve(err.data ?? {});
      });
    });
  }

  connected(timeoutMs = 5_000): Promise<void> {
    return waitUntil(this.socket, 'connect', () => (this.socket.connected ? true : undefined), 'raw client to connect', timeoutMs).then(() => undefined);
  }

  /** Emits and waits for the hub's ack (bounded). */
  request<T = unknown>(event: string, payload: unknown, timeoutMs = 5_000): Promise<T> {
    return this.socket.timeout(timeoutMs).emitWithAck(event, payload) as Promise<T>;
  }

  of(event: string): ParcelMessage[] {
    return this.received.filter((r) => r.event === event).map((r) => r.payload);
  }

  waitFor(event: string, count: number, what: string, timeoutMs = 10_000): Promise<ParcelMessage[]> {
    return waitUntil(this, 'message', () => {
      const got = this.of(event);
      return got.length >= count ? got : undefined;
    }, `${what}: ${count} '${event}' message(s)`, timeoutMs);
  }

  close(): void {
    this.socket.disconnect();
  }
}

/** Closes everything registered, newest first; for `afterEach`. */
export class Cleanup {
  private readonly steps: Array<() => unknown> = [];

  add<T>(thing: T, step: (thing: T) => unknown): T {
    this.steps.push(() => step(thing));
    return thing;
  }

  async run(): Promise<void> {
    while (this.steps.length > 0) {
      const step = this.steps.pop();
      await step?.();
    }
  }
}

/** A RawClient with a token for `as` (registered in `cleanup`), once it is connected. */
export async function connectClient(cleanup: Cleanup, url: string, as: TokenSubject, autoAck = true): Promise<RawClient> {
  const client = cleanup.add(new RawClient(url, { auth: { token: tokenFor(as) }, autoAck }), (c) => c.close());
  await client.connected();
  return client;
}

export function order(store: string, n: number | string) {
  return { store, orderId: `${store}-order-${n}`, customer: `Customer ${n}`, address: `${n} Main Street, Springfield` };
}

/** How many messages `/api/queues` says `queue` holds (0 when it is not listed); `token` for a hub with tokens. */
export async function queueDepth(url: string, queue: string, token?: string): Promise<number> {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const body = (await (await fetch(`${url}/api/queues`, { headers })).json()) as { data: { queues: Array<{ queue: string; depth: number }> } };
  return body.data.queues.find((q) => q.queue === queue)?.depth ?? 0;
}
