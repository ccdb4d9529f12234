#!/usr/bin/env node
/**
 * The baseline of `caps bench`: the course's CAPS hub as a bare Socket.IO relay. It routes
 * `pickup` to a driver and `in-transit`/`delivered` to the store's room, and logs every event as
 * the course's hub does (`EVENT: { event, time, payload }`). No queue, no validation, no storage,
 * no acks asked of clients: what it sends is fire-and-forget. It answers publish acks at once, so
 * the same load generator drives it and CAPS.
 *
 * One deliberate difference from the course's hub: a pickup goes to one driver (round robin), not
 * to every driver, so that each parcel is delivered once and the load matches CAPS's dispatch one.
 */
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import type { Socket } from 'socket.io';
import type { CommandSpec } from '../cli/args.js';
import { runCommand, untilSignal } from '../cli/args.js';

export const relayCommand = {
  usage: 'node dist/bench/relay.js',
  summary: "The bare Socket.IO relay caps bench compares CAPS with (the course's hub).",
  flags: {
    port: { type: 'integer', description: 'TCP port', placeholder: 'PORT', default: 3100, min: 0, max: 65535 },
    host: { type: 'string', description: 'interface to listen on', placeholder: 'HOST', default: '127.0.0.1' },
  },
} as const satisfies CommandSpec;

interface Publish {
  store?: string;
  orderId?: string;
}

const exitCode = await runCommand(relayCommand, process.argv.slice(2), async (flags) => {
  const httpServer = createServer();
  const io = new Server(httpServer);
  const caps = io.of('/caps');
  const drivers: Socket[] = [];
  let next = 0;

  caps.on('connection', (socket) => {
    const auth = socket.handshake.auth as { role?: string; store?: string };
    if (auth.role === 'driver') drivers.push(socket);
    if (auth.role === 'vendor' && auth.store) void socket.join(auth.store);
    socket.on('join', (room: unknown) => {
      if (typeof room !== 'string') return;
      // a course driver joins the pool by name (--protocol lab)
      if (/^driver/i.test(room)) {
        if (!drivers.includes(socket)) drivers.push(socket);
      } else void socket.join(room);
    });
    socket.on('pickup', (payload: Publish, ack?: (r: unknown) => void) => {
      console.log('EVENT:', { event: 'pickup', time: new Date().toISOString(), payload });
      const driver = drivers.length > 0 ? drivers[next++ % drivers.length] : undefined;
      driver?.emit('pickup', payload);
      if (typeof ack === 'function') ack({ ok: true });
    });
    for (const event of ['in-transit', 'delivered'] as const) {
      socket.on(event, (payload: Publish, ack?: (r: unknown) => void) => {
        console.log('EVENT:', { event, time: new Date().toISOString(), payload });
        if (payload?.store) caps.to(payload.store).emit(event, payload);
        if (typeof ack === 'function') ack({ ok: true });
      });
    }
    socket.on('disconnect', () => {
      const i = drivers.indexOf(socket);
      if (i !== -1) drivers.splice(i, 1);
    });
  });

  await new Promise<void>((resolve) => httpServer.listen(flags.port, flags.host, resolve));
  process.stderr.write(`relay listening on ${flags.host}:${flags.port}\n`);
  await untilSignal();
  await new Promise<void>((resolve) => void io.close(() => resolve()));
  return 0;
});
process.exitCode = exitCode;
