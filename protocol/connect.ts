import { setMaxListeners } from 'node:events';
import { io } from 'socket.io-client';
import type { Socket } from 'socket.io-client';
import type { ClientToServerEvents, ServerToClientEvents } from './events.js';
import { CAPS_NAMESPACE } from './events.js';
import type { AckResult } from './result.js';
import type { PublishResult } from './messages.js';
import type { ParcelEvent, PublishPayload } from './schemas.js';
import type { CapsErrorBody } from './errors.js';
import { TRANSIENT_CODES, isCapsErrorCode } from './errors.js';

/** A client's socket, typed from the client's side of the contract. */
export type CapsClientSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/** `http://host:3000` or `http://host:3000/caps` → the `/caps` namespace URL. */
export function namespaceUrl(url: string): string {
  const base = url.replace(/\/+$/, '');
  return base.endsWith(CAPS_NAMESPACE) ? base : `${base}${CAPS_NAMESPACE}`;
}

/** An AbortController whose signal many requests in flight may listen to at once (not a leak). */
export function abortController(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}

/** `--url` may list several hubs, comma-separated: `http://a:3000,http://b:3000`. */
export function hubUrls(url: string): string[] {
  return url
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '');
}

const current = new WeakMap<CapsClientSocket, string>();

/** The hub URL a socket is using (or trying) now. */
export function currentHub(socket: CapsClientSocket): string {
  return current.get(socket) ?? '';
}

/**
 * Opens (without waiting) a websocket-only connection to a hub's `/caps` namespace. With several
 * hub URLs, each reconnect attempt moves on to the next one, so a client whose hub is gone
 * carries on with another hub of the same Redis.
 */
export function connectCaps(url: string, auth: Record<string, string>): CapsClientSocket {
  const urls = hubUrls(url);
  const first = urls[0] ?? url;
  const socket: CapsClientSocket = io(namespaceUrl(first), {
    auth,
    // websocket only: no long-polling round trips, and no sticky sessions needed behind a balancer
    transports: ['websocket'],
    forceNew: true,
    reconnectionDelay: 250,
    reconnectionDelayMax: 2_000,
  });
  current.set(socket, first);
  if (urls.length > 1) {
    let index = 0;
    socket.io.on('reconnect_attempt', () => {
      index = (index + 1) % urls.length;
      const next = urls[index] ?? first;
      current.set(socket, next);
      // the manager opens its next connection to this URI (socket.io-client keeps it private)
      (socket.io as unknown as { uri: string }).uri = namespaceUrl(next);
    });
  }
  return socket;
}

/** Resolves on the socket's next `connect`, or rejects after `timeoutMs`. */
export function waitConnected(socket: CapsClientSocket, timeoutMs: number): Promise<void> {
  if (socket.connected) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off('connect', onConnect);
      reject(new Error(`not connected to the hub within ${timeoutMs} ms`));
    }, timeoutMs);
    const onConnect = (): void => {
      clearTimeout(timer);
      resolve();
    };
    socket.once('connect', onConnect);
  });
}

/** The hub's coded refusal inside a `connect_error`, if that is what it is. */
export function refusalOf(err: Error): CapsErrorBody | undefined {
  const data = (err as Error & { data?: unknown }).data;
  if (data !== null && typeof data === 'object' && isCapsErrorCode((data as Record<string, unknown>)['code'])) {
    const body = data as Record<string, unknown>;
    return { code: body['code'] as CapsErrorBody['code'], message: String(body['message'] ?? err.message) };
  }
  return undefined;
}

/** Why an ack did not come back ok, as one line. */
export function describeFailure(result: AckResult<unknown>): string {
  return result.ok ? 'ok' : `${result.error.code}: ${result.error.message}`;
}

/**
 * Emits with an ack, resolving with the hub's answer; rejects after `timeoutMs` or as soon as
 * `signal` aborts (a client closing must not wait out its ack time-outs).
 */
export function request(
  socket: CapsClientSocket,
  event: ParcelEvent,
  payload: PublishPayload,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<AckResult<PublishResult>> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new RequestFailed('closed'));
      return;
    }
    const finish = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.off('disconnect', onDisconnect);
    };
    const onAbort = (): void => {
      finish();
      reject(new RequestFailed('closed'));
    };
    // socket.io drops the ack of a request in flight when the connection goes: say so at once
    const onDisconnect = (): void => {
      finish();
      reject(new RequestFailed('disconnected'));
    };
    const timer = setTimeout(() => {
      finish();
      reject(new RequestFailed('timeout'));
    }, timeoutMs);
    signal.addEventListener('abort', onAbort, { once: true });
    if (socket.connected) socket.once('disconnect', onDisconnect);
    socket.emit(event as 'pickup', payload, (result: AckResult<PublishResult>) => {
      finish();
      resolve(result);
    });
  });
}

/** Why a request got no answer: the client closed, the connection went, or no ack in time. */
export class RequestFailed extends Error {
  override readonly name = 'RequestFailed';
  constructor(readonly reason: 'closed' | 'disconnected' | 'timeout') {
    super(reason);
  }
}

/** Resolves once the socket is connected (at once if it is), or when `signal` aborts. */
export function untilConnected(socket: CapsClientSocket, signal: AbortSignal): Promise<void> {
  if (socket.connected || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('connect', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    socket.once('connect', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Waits `ms`, or less if `signal` aborts first (a closing client does not wait out its back-off). */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Back-off before try `attempt` (1, 2, ...) after a transient refusal: 250 ms doubling to 2 s. */
export function backoff(attempt: number): number {
  return Math.min(250 * 2 ** Math.max(0, attempt - 1), 2_000);
}

/**
 * Publishes a step until the hub answers for good: sends again after an ack time-out, once
 * reconnected after a lost connection, and after a back-off on a transient refusal (storage
 * away, queue full, rate limit: nothing was stored). Resolves with the hub's answer (ok, or a
 * final refusal), or undefined if `signal` aborted first. `problem` hears each retry's reason.
 */
export async function publishUntilAnswered(
  socket: CapsClientSocket,
  event: ParcelEvent,
  payload: PublishPayload,
  options: { ackTimeoutMs: number; signal: AbortSignal; what: string; problem: (text: string) => void },
): Promise<AckResult<PublishResult> | undefined> {
  const { ackTimeoutMs, signal, what, problem } = options;
  for (let attempt = 1; !signal.aborted; attempt++) {
    try {
      const result = await request(socket, event, payload, ackTimeoutMs, signal);
      if (result.ok || !TRANSIENT_CODES.has(result.error.code)) return result;
      problem(`${what} not taken yet (${describeFailure(result)}); trying again in ${backoff(attempt)} ms`);
      await pause(backoff(attempt), signal);
    } catch (err) {
      if (!(err instanceof RequestFailed) || signal.aborted) return undefined;
      if (err.reason === 'disconnected') {
        problem(`lost the hub before it acknowledged ${what}; sending again once reconnected`);
        await untilConnected(socket, signal);
      } else {
        problem(`no ack for ${what} within ${ackTimeoutMs} ms; sending again`);
      }
    }
  }
  return undefined;
}
