import { EventEmitter } from 'node:events';

/**
 * Resolves with the first value `check` returns that is not undefined, re-checking each time
 * `emitter` emits `event`. Rejects after `timeoutMs`, naming what it waited for.
 */
/** Anything with on/off: a Node EventEmitter or a socket.io-client Socket. */
export interface Listenable {
  on(event: string, listener: () => void): unknown;
  off(event: string, listener: () => void): unknown;
}

export function waitUntil<T>(emitter: Listenable, event: string, check: () => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
  const first = check();
  if (first !== undefined) return Promise.resolve(first);
  return new Promise<T>((resolve, reject) => {
    const onEvent = (): void => {
      const value = check();
      if (value === undefined) return;
      clearTimeout(timer);
      emitter.off(event, onEvent);
      resolve(value);
    };
    const timer = setTimeout(() => {
      emitter.off(event, onEvent);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    emitter.on(event, onEvent);
  });
}

/** Lines from a log or a child process, with a bounded wait for a line that matches. */
export class Lines extends EventEmitter {
  readonly all: string[] = [];

  push = (line: string): void => {
    this.all.push(line);
    this.emit('line', line);
  };

  /** Waits for `count` lines matching `pattern`; resolves with them. */
  waitFor(pattern: RegExp, what: string, timeoutMs = 10_000, count = 1): Promise<string[]> {
    return waitUntil(this, 'line', () => {
      const hits = this.matching(pattern);
      return hits.length >= count ? hits : undefined;
    }, `${what} (${count} line(s) matching ${pattern})`, timeoutMs).catch((err: Error) => {
      throw new Error(`${err.message}; last lines:\n${this.all.slice(-15).join('\n')}`);
    });
  }

  matching(pattern: RegExp): string[] {
    return this.all.filter((line) => pattern.test(line));
  }

  text(): string {
    return this.all.join('\n');
  }
}

/**
 * Resolves with the first value `check` (sync or async) returns that is not undefined, asking
 * again every `everyMs`. For state only visible by asking (an HTTP read); rejects after `timeoutMs`,
 * naming what it waited for and the last value seen.
 */
export async function poll<T>(check: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs = 10_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
