import type { CapsErrorCode } from '../protocol/errors.js';

/** What the hub counts; read by tests now and exported as metrics later. */
export class Counters {
  /** Refusals by code: error acks, refused connections, cut-off floods. */
  readonly refused = new Map<CapsErrorCode, number>();
  /** Events accepted from clients, by event name. */
  readonly received = new Map<string, number>();

  refuse(code: CapsErrorCode): void {
    this.refused.set(code, (this.refused.get(code) ?? 0) + 1);
  }

  receive(event: string): void {
    this.received.set(event, (this.received.get(event) ?? 0) + 1);
  }

  refusedCount(code: CapsErrorCode): number {
    return this.refused.get(code) ?? 0;
  }
}
