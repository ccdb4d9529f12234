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
 * engine.io holds back what is sent after its first write of a turn until that write completes,
 * then writes it in one batch, which goes out at the next turn's uncork: packet order is
 * unchanged, and nothing waits longer than two turns.
 */
export function coalesceWrites(io: Server): void {
  const corked = new Set<NetSocket>();
  const uncorkAll = (): void => {
    // emptied first: whatever happens while uncorking, the next flush schedules a new round
    const sockets = [...corked];
    corked.clear();
    for (const tcp of sockets) if (!tcp.destroyed) tcp.uncork();
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
