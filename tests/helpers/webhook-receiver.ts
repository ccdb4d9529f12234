import { createHmac, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { waitUntil } from './wait.js';

/** One POST a receiver got, and what it answered. */
export interface Received {
  id: string;
  timestamp: string;
  signature: string;
  raw: string;
  body: { id: string; type: string; created: string; data: Record<string, unknown> };
  headers: IncomingHttpHeaders;
  /** The status the receiver answered. */
  status: number;
}

/**
 * A real webhook receiver: node:http on 127.0.0.1 and a free port, recording every POST with its
 * raw body. `answer` decides each response's status (200 unless changed); emits `request`.
 */
export class WebhookReceiver extends EventEmitter {
  readonly received: Received[] = [];
  answer: (request: Received) => number = () => 200;
  private readonly server: Server;

  private constructor() {
    super();
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const entry: Received = {
          id: String(req.headers['caps-webhook-id']),
          timestamp: String(req.headers['caps-webhook-timestamp']),
          signature: String(req.headers['caps-signature']),
          raw,
          body: JSON.parse(raw) as Received['body'],
          headers: req.headers,
          status: 0,
        };
        entry.status = this.answer(entry);
        this.received.push(entry);
        res.writeHead(entry.status, { 'content-type': 'text/plain' }).end('ok');
        this.emit('request');
      });
    });
  }

  static async start(): Promise<WebhookReceiver> {
    const receiver = new WebhookReceiver();
    await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
    return receiver;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hooks`;
  }

  /** The requests answered with a 2xx. */
  delivered(): Received[] {
    return this.received.filter((r) => r.status >= 200 && r.status < 300);
  }

  /** Waits (bounded) until `check` over what was received returns a value. */
  waitFor<T>(check: (received: Received[]) => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
    return waitUntil(this, 'request', () => check(this.received), what, timeoutMs);
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** The README's verification, as a receiver would write it. */
export function verifies(secret: string, r: Pick<Received, 'id' | 'timestamp' | 'signature' | 'raw'>): boolean {
  const expected = Buffer.from(`v1=${createHmac('sha256', secret).update(`${r.id}.${r.timestamp}.${r.raw}`).digest('hex')}`);
  const given = Buffer.from(r.signature);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** The events of one parcel delivered (2xx), in the order they were answered, once each. */
export function deliveredEvents(received: readonly Received[], orderId: string): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const r of received) {
    if (r.status < 200 || r.status >= 300 || r.body.data['orderId'] !== orderId || seen.has(r.id)) continue;
    seen.add(r.id);
    out.push(r.body.type);
  }
  return out;
}

/** The steps these tests publish, in their order (PARCEL_EVENTS may hold more, in any order). */
const STEPS = ['pickup', 'in-transit', 'delivered'] as const;

/** No request for a later step of a parcel came before its earlier step was answered with a 2xx. */
export function inOrderPerParcel(received: readonly Received[]): string[] {
  const problems: string[] = [];
  const done = new Map<string, Set<string>>();
  for (const r of received) {
    const orderId = String(r.body.data['orderId']);
    const event = r.body.type.replace('parcel.', '');
    const index = STEPS.indexOf(event as (typeof STEPS)[number]);
    const delivered = done.get(orderId) ?? new Set<string>();
    for (const earlier of STEPS.slice(0, index)) {
      if (!delivered.has(earlier)) problems.push(`${orderId}: ${event} sent before ${earlier} was delivered`);
    }
    if (r.status >= 200 && r.status < 300) delivered.add(event);
    done.set(orderId, delivered);
  }
  return problems;
}
