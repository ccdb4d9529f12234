import { EventEmitter } from 'node:events';
import type { CapsClientSocket } from '../protocol/connect.js';
import { abortController, connectCaps, publishUntilAnswered, refusalOf, waitConnected } from '../protocol/connect.js';
import { CapsError } from '../protocol/errors.js';
import type { CapsErrorBody } from '../protocol/errors.js';
import type { MessageAck } from '../protocol/events.js';
import type { ParcelMessage, PublishResult } from '../protocol/messages.js';
import { RecentIds } from '../protocol/recent-ids.js';
import type { ParcelEvent, PublishPayload } from '../protocol/schemas.js';

export interface CapsClientOptions {
  /** Hub URL, e.g. `http://localhost:3000` (several, comma-separated, to fail over between hubs). */
  url: string;
  /** A token from `caps token`; required unless the hub runs in open lab mode. */
  token?: string;
  /** Who this client is, in open lab mode (with a token, the token says). */
  role?: 'vendor' | 'driver';
  /** A vendor's store (lab mode). */
  store?: string;
  /** A driver's name (lab mode). */
  name?: string;
  /** How long to wait for each publish's ack before sending it again. Default 5000 ms. */
  ackTimeoutMs?: number;
}

/** A handler of one kind of message; the message is acknowledged once it returns (or resolves). */
export type MessageHandler = (message: ParcelMessage) => unknown;

export interface CapsClientEvents {
  /** A handler threw: the message was not acknowledged, and the hub will send it again. */
  error: [Error, ParcelMessage];
  /** The hub refused the connection (bad or expired token): retrying will not help. */
  refused: [CapsErrorBody];
}

/**
 * The course's lab 13 client library: publish events and subscribe to them, over the hub's
 * durable queue.
 *
 * ```ts
 * const vendor = new CapsClient({ url: 'http://localhost:3000', role: 'vendor', store: 'acme' });
 * vendor.subscribe('delivered', (m) => console.log(`Thank you for delivering ${m.orderId}`));
 * await vendor.publish('pickup', { store: 'acme', orderId: 'o-1', customer: 'Ada', address: '1 Lane' });
 * ```
 */
export class CapsClient extends EventEmitter<CapsClientEvents> {
  readonly socket: CapsClientSocket;
  private readonly ackTimeoutMs: number;
  private readonly handlers = new Map<ParcelEvent, MessageHandler[]>();
  /** Messages handled already: the hub delivers at least once, so some arrive twice. */
  private readonly handled = new RecentIds(10_000);
  private readonly aborter = abortController();
  private closing: Promise<void> | undefined;

  constructor(options: CapsClientOptions) {
    super();
    this.ackTimeoutMs = options.ackTimeoutMs ?? 5_000;
    const auth: Record<string, string> = {};
    if (options.token !== undefined) auth['token'] = options.token;
    if (options.role !== undefined) auth['role'] = options.role;
    if (options.store !== undefined) auth['store'] = options.store;
    if (options.name !== undefined) auth['name'] = options.name;
    this.socket = connectCaps(options.url, auth);
    this.socket.on('connect_error', (err) => {
      const refusal = refusalOf(err);
      if (refusal) this.emit('refused', refusal);
    });
  }

  /** Resolves once connected to the hub. */
  start(timeoutMs = 10_000): Promise<void> {
    return waitConnected(this.socket, timeoutMs);
  }

  /**
   * Publishes a step and resolves once the hub has stored it (a duplicate resolves too, with
   * `duplicate: true`). Sends again after an ack time-out, a lost connection or a transient
   * refusal; rejects with a `CapsError` (its `code` one of `CAPS_ERR_*`) when the hub refuses it
   * for good, or when the client is closed first.
   */
  async publish(event: ParcelEvent, payload: PublishPayload): Promise<PublishResult> {
    const result = await publishUntilAnswered(this.socket, event, payload, {
      ackTimeoutMs: this.ackTimeoutMs,
      signal: this.aborter.signal,
      what: `${event} ${payload.orderId ?? payload.order?.orderId ?? ''}`.trim(),
      problem: () => undefined,
    });
    if (!result) throw new Error(`the client was closed before the hub acknowledged ${event}`);
    if (!result.ok) throw new CapsError(result.error.code, result.error.message);
    return result.data;
  }

  /**
   * Calls `handler` for each `event` message this client receives, then acknowledges it, which
   * takes it off the client's queue at the hub. A handler that throws (or rejects) leaves it
   * unacknowledged: the hub sends it again (a pickup may go to another driver). A message already
   * handled is acknowledged without calling the handlers again. Returns an unsubscribe function.
   */
  subscribe(event: ParcelEvent, handler: MessageHandler): () => void {
    let list = this.handlers.get(event);
    if (!list) {
      list = [];
      this.handlers.set(event, list);
      this.socket.on(event, (message: ParcelMessage, ack?: MessageAck) => void this.dispatch(event, message, ack));
    }
    list.push(handler);
    return () => {
      const current = this.handlers.get(event);
      const at = current?.indexOf(handler) ?? -1;
      if (!current || at < 0) return;
      current.splice(at, 1);
      // nobody listens any more: stop taking (and acknowledging) these messages
      if (current.length === 0) {
        this.handlers.delete(event);
        this.socket.off(event);
      }
    };
  }

  /** Stops retrying publishes and disconnects. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.aborter.abort();
      this.socket.disconnect();
    })();
    return this.closing;
  }

  private async dispatch(event: ParcelEvent, message: ParcelMessage, ack: MessageAck | undefined): Promise<void> {
    if (this.handled.has(message.messageId)) {
      ack?.({ ok: true });
      return;
    }
    try {
      for (const handler of [...(this.handlers.get(event) ?? [])]) await handler(message);
    } catch (err) {
      // an 'error' event nobody listens to would throw here, and crash the process
      if (this.listenerCount('error') > 0) this.emit('error', err instanceof Error ? err : new Error(String(err)), message);
      return;
    }
    this.handled.add(message.messageId);
    ack?.({ ok: true });
  }
}
