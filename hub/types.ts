import type { Namespace, Server, Socket } from 'socket.io';
import type { ClientToServerEvents, InterServerEvents, ServerToClientEvents, SocketData } from '../protocol/events.js';

export type CapsServer = Server<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;
export type CapsNamespace = Namespace<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;
export type CapsSocket = Socket<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;
