import type { Socket } from 'socket.io';
import { CapsError } from '../protocol/errors.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/** Refused CONNECTs one connection may send before it is closed. */
export const MAX_REFUSALS_PER_CONNECTION = 3;

/**
 * Refusals of a namespace CONNECT (a bad token, a namespace other than /caps), counted per
 * underlying connection: each is counted in the metrics and answered with its code, the first is
 * logged, and a connection that keeps sending refused CONNECTs is closed, so one websocket cannot
 * make the hub answer and log thousands of them.
 */
export class ConnectionRefusals {
  private readonly counts = new WeakMap<object, number>();

  constructor(
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {}

  /** The error to hand to the middleware's `next`; closes the connection past the limit. */
  refuse(socket: Socket, error: CapsError): Error {
    const conn = socket.conn;
    const n = (this.counts.get(conn) ?? 0) + 1;
    this.counts.set(conn, n);
    this.metrics.refuse(error.code);
    if (n === 1) this.logger.warn('REFUSED CONNECTION', { code: error.code, reason: error.message, namespace: socket.nsp.name, address: socket.handshake.address });
    if (n >= MAX_REFUSALS_PER_CONNECTION) {
      this.logger.warn('CONNECTION CLOSED', { reason: `${n} refused connects`, address: socket.handshake.address });
      // after the refusal itself is written: engine.io flushes its buffer before it closes
      setImmediate(() => conn.close());
    }
    const refusal = new Error(error.message) as Error & { data: unknown };
    refusal.data = error.toBody();
    return refusal;
  }
}

/** Middleware for every namespace but /caps (Socket.IO's own `/` included): refused with a code. */
export function onlyCaps(refusals: ConnectionRefusals, capsNamespace: string) {
  return (socket: Socket, next: (err?: Error) => void): void => {
    next(refusals.refuse(socket, new CapsError('CAPS_ERR_NOT_FOUND', `this hub serves the ${capsNamespace} namespace only: connect to ${capsNamespace}, not ${socket.nsp.name}`)));
  };
}
