import type { Socket as NetSocket } from 'node:net';
import type { Server } from 'socket.io';

/** What the hook needs of engine.io's socket: its transport and, for websocket, ws's TCP socket. */
interface EngineSocketLike {
  transport?: { name?: string; socket?: { _socket?: NetSocket } };
}

/**
 * ws writes every Socket.IO packet with its own `writev` system call; under load that call was
 * the largest cost of the hub. This corks a client's TCP socket when engine.io starts writing to
 * it and uncorks every corked socket once, after the current turn of the event loop has handled
 * its I/O (setImmediate): everything written to one client in that turn goes out in one `writev`.
 * engine.io gathers what is sent meanwhile and writes it after that, so the order of packets is
 * unchanged, and nothing waits longer than one turn.
 */
export function coalesceWrites(io: Server): void {
  const corked = new Set<NetSocket>();
  const uncorkAll = (): void => {
    for (const tcp of corked) if (!tcp.destroyed) tcp.uncork();
    corked.clear();
  };
  io.engine.on('flush', (socket: EngineSocketLike) => {
    if (socket.transport?.name !== 'websocket') return;
    const tcp = socket.transport.socket?._socket;
    if (!tcp || tcp.destroyed || corked.has(tcp)) return;
    if (corked.size === 0) setImmediate(uncorkAll);
    corked.add(tcp);
    tcp.cork();
  });
}
