#!/usr/bin/env node
/**
 * Idle drivers for `caps bench --connections`, run as a forked child. It opens its share of the
 * driver connections (a bounded number at a time), reconnects them when the hub goes away, and
 * reports how many are connected and which messages arrived. Until the parent says `ack-mode` it
 * acknowledges nothing, so what the hub sends stays queued across the hub's restart.
 */
import { io } from 'socket.io-client';
import type { Socket } from 'socket.io-client';
import type { IdleConfig, IdleFromParent, IdleToParent } from './protocol.js';

const config = JSON.parse(process.argv[2] ?? '{}') as IdleConfig;
const sockets: Socket[] = [];
let connected = 0;
let failed = 0;
let received = 0;
let ackMode = false;
let firstError: string | undefined;
let newIds: string[] = [];

process.on('message', (message: IdleFromParent) => {
  if (message.type === 'ack-mode') ackMode = true;
  if (message.type === 'stop') {
    for (const socket of sockets) socket.disconnect();
    clearInterval(reporter);
    report();
    process.disconnect?.();
  }
});

function report(): void {
  const message: IdleToParent = { type: 'progress', connected, failed, received, newIds, ...(firstError ? { firstError } : {}) };
  newIds = [];
  process.send?.(message);
}
const reporter = setInterval(report, 250);

function open(index: number): Promise<void> {
  const socket = io(`${config.url}/caps`, {
    auth: { role: 'driver', name: `${config.prefix}-${index}` },
    transports: ['websocket'],
    forceNew: true,
    reconnectionDelay: 250,
    reconnectionDelayMax: 2_000,
    timeout: 20_000,
  });
  sockets.push(socket);
  socket.on('connect', () => connected++);
  socket.on('disconnect', () => connected--);
  socket.on('pickup', (m: { messageId?: string }, ack?: (r: unknown) => void) => {
    if (!ackMode) return;
    received++;
    if (m.messageId) newIds.push(m.messageId);
    ack?.({ ok: true });
  });
  return new Promise((resolve) => {
    socket.once('connect', () => resolve());
    socket.on('connect_error', (err) => {
      failed++;
      firstError ??= err.message;
    });
  });
}

// a bounded number of handshakes at a time, so a ramp of thousands does not time itself out
let next = 0;
const worker = async (): Promise<void> => {
  while (next < config.count) {
    const index = config.first + next++;
    await open(index);
  }
};
await Promise.all(Array.from({ length: Math.min(config.concurrency, config.count) }, worker));
