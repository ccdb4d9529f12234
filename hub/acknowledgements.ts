/**
 * Waits for acknowledgements, with no sockets: each send of a message starts a wait; the ack
 * settles it; a wait past its deadline times out (the caller sends again or hands the message to
 * someone else). One sweeper times every wait out instead of a timer per message, and stops when
 * none are left. The wait doubles with each try, up to a ceiling.
 */

export interface AckWaitOptions {
  /** First wait for an ack (ms); doubles on each try. */
  ackTimeoutMs: number;
  /** Longest wait (ms). */
  maxBackoffMs: number;
}

/** One send waiting for its ack. */
export interface AckWait<E, S> {
  readonly entry: E;
  readonly socket: S;
  /** When it times out (ms, the tracker's clock). */
  readonly deadline: number;
  /** How long it waits (ms). */
  readonly wait: number;
}

export class Acknowledgements<E, S> {
  private readonly waits = new Set<AckWait<E, S>>();
  /** The waits of each message, so that one leaving its queue drops them all. */
  private readonly byEntry = new Map<E, Set<AckWait<E, S>>>();
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly options: AckWaitOptions,
    private readonly onTimeout: (wait: AckWait<E, S>) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** How long try number `attempt` (1, 2, ...) waits. */
  waitFor(attempt: number): number {
    return Math.min(this.options.ackTimeoutMs * 2 ** (Math.max(1, attempt) - 1), this.options.maxBackoffMs);
  }

  /** Starts the wait of a send that is try number `attempt`. */
  start(entry: E, socket: S, attempt: number): AckWait<E, S> {
    const wait = this.waitFor(attempt);
    const ackWait: AckWait<E, S> = { entry, socket, deadline: this.now() + wait, wait };
    this.waits.add(ackWait);
    let set = this.byEntry.get(entry);
    if (!set) {
      set = new Set();
      this.byEntry.set(entry, set);
    }
    set.add(ackWait);
    this.sweepSoon();
    return ackWait;
  }

  /** The ack came: true if it was still awaited (an ack after the time-out changes nothing). */
  settle(wait: AckWait<E, S>): boolean {
    if (this.closed || !this.waits.delete(wait)) return false;
    this.unindex(wait);
    return true;
  }

  /** The message left its queue some other way: nothing of it is awaited any more. */
  forget(entry: E): void {
    const set = this.byEntry.get(entry);
    if (!set) return;
    for (const wait of set) this.waits.delete(wait);
    this.byEntry.delete(entry);
  }

  /** Times out every wait past its deadline now (the sweeper calls this). */
  sweep(): void {
    const now = this.now();
    for (const wait of this.waits) {
      if (wait.deadline > now) continue;
      this.waits.delete(wait);
      this.unindex(wait);
      this.onTimeout(wait);
    }
    if (this.waits.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  get size(): number {
    return this.waits.size;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.waits.clear();
    this.byEntry.clear();
  }

  private unindex(wait: AckWait<E, S>): void {
    const set = this.byEntry.get(wait.entry);
    set?.delete(wait);
    if (set?.size === 0) this.byEntry.delete(wait.entry);
  }

  /** Starts the sweeper (it stops itself when no wait is left). */
  private sweepSoon(): void {
    if (this.sweeper || this.closed) return;
    const every = Math.max(10, Math.min(1_000, Math.floor(this.options.ackTimeoutMs / 4)));
    this.sweeper = setInterval(() => this.sweep(), every);
    // prevents the timer from keeping the process alive
    this.sweeper.unref();
  }
}
