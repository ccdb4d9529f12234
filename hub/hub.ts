import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { Server } from 'socket.io';
import { CAPS_NAMESPACE } from '../protocol/events.js';
import { fail } from '../protocol/result.js';
import { CapsError } from '../protocol/errors.js';
import { authenticate, trackExpiry } from './auth.js';
import { coalesceWrites } from './coalesce.js';
import { Dashboards } from './dashboards.js';
import { callerOf, sendError, trackingApi } from './http-api.js';
import { handleConnection } from './connection.js';
import { Retention } from './retention.js';
import { pickupRoute } from './http-publish.js';
import { LIFECYCLE_SCRIPT } from './lifecycle-script.js';
import type { PublishContext } from './publish.js';
import { DEFAULT_MAX_ATTEMPTS } from '../protocol/lifecycle.js';
import { shopApi } from './shop-api.js';
import { trackingPage } from './tracking-page.js';
import { OPENAPI } from './openapi.js';
import { Metrics } from './metrics.js';
import type { RateLimitOptions } from './rate-limit.js';
import { DEFAULT_RATE_LIMIT } from './rate-limit.js';
import type { Logger } from './logger.js';
import { createLogger } from './logger.js';
import type { DeliveryOptions, DispatchMode } from './delivery.js';
import { DEFAULT_DELIVERY, Delivery } from './delivery.js';
import { ConnectionRefusals, onlyCaps } from './refusals.js';
import { TokenExpiry } from './expiry.js';
import { Locations } from './locations.js';
import { admitTrackers } from './tracking.js';
import { Keyring } from './keyring.js';
import { ClientLimits, DEFAULT_CONNECTION_LIMITS, clientKey } from './client-limits.js';
import { OriginPolicy } from './origin-policy.js';
import { RecentIds } from '../protocol/recent-ids.js';
import { MemoryStorage } from './storage/memory-storage.js';
import { SqliteStorage } from './storage/sqlite-storage.js';
import { RedisStorage, redisClient } from './storage/redis-storage.js';
import { RedisFeed } from './redis-feed.js';
import { SharedWatchers } from './watchers.js';
import type { Cluster, Redis } from 'ioredis';
import { createAdapter } from '@socket.io/redis-streams-adapter';
import type { Storage, StorageKind } from './storage/storage.js';
import { DEFAULT_LIMITS } from './storage/storage.js';
import type { CapsServer } from './types.js';
import { WEBHOOK_DEFAULTS, Webhooks } from './webhooks/webhooks.js';
import { LEASE_MARGIN_MS, RedisOutbox } from './webhooks/redis-outbox.js';
import { SqliteOutbox } from './webhooks/outbox.js';
import { webhookRoutes } from './webhooks/routes.js';

export interface HubOptions {
  /** TCP port; 0 picks a free one. Default 3000. */
  port?: number;
  /** Interface to listen on; default: every interface. */
  host?: string;
  /**
   * Web pages of other origins that may use the hub (`https://shop.example.com`), or `*` for any.
   * A page's own origin and localhost on the hub's port always may; see origin-policy.ts.
   */
  allowedOrigins?: readonly string[];
  /** Where customers reach this hub (`https://track.example.com`), for the tracking links it mints; default: the Host each request came to. */
  publicUrl?: string;
  /** Open lab mode: clients may connect without a token (a token, when sent, is still checked). */
  allowAnonymous?: boolean;
  /** The HMAC secret tokens are signed with. Required unless `allowAnonymous` (or `keyring`). */
  secret?: string;
  /** The keys and revocations tokens are checked against (`caps hub` reads them from its data folder); default: `secret` alone. */
  keyring?: Keyring;
  /** Event rate limit per client (a token's subject, or an address without one), over all its connections. */
  rateLimit?: Partial<RateLimitOptions>;
  /** Connections in all (default 20,000), per token (64) and per address without a token (256); 0: no limit. */
  maxConnections?: number;
  maxConnectionsPerToken?: number;
  maxConnectionsPerAddress?: number;
  /** How pickups reach drivers. Default `one`; `broadcast` (the lab's) with `allowAnonymous`. */
  dispatch?: DispatchMode;
  /** Largest message a client may send, in bytes. Default 64 KiB. */
  maxPayloadBytes?: number;
  /** Where parcels and queues live (the storage; `--store` on the command line). Default `sqlite`; `redis` when `redisUrl` is given. */
  storage?: StorageKind;
  /** Share queues, parcels and room fan-out with every hub on this Redis (`redis://host:port`). */
  redisUrl?: string;
  /** ...or on this Redis Cluster: its seed nodes, `host:port,host:port`. */
  redisCluster?: string;
  /** Key prefix in Redis (several deployments, or tests, on one Redis). Default `caps:`. */
  redisPrefix?: string;
  /** Redis replicas that must have each step before it is acknowledged (`WAIT`). Default 0. */
  redisWaitReplicas?: number;
  /** Folder of the SQLite storage. Default `./data`. */
  dataDir?: string;
  /** SQLite's fsync policy: `full` (default) survives power loss, `normal` a killed process. */
  sync?: 'full' | 'normal';
  /** Per store: pickups waiting for drivers, and messages waiting for its vendors, before its steps are refused. Default 10,000. */
  maxQueueDepth?: number;
  /** First wait for a client's ack before sending again (doubles each try). Default 30 s. */
  ackTimeoutMs?: number;
  /** Pickups one driver may hold at once. Default 64. */
  driverPrefetch?: number;
  /** How long a delivered parcel's history is kept, in ms; 0 keeps it forever. Default 30 days. */
  retentionMs?: number;
  /** How often parcels past the retention period are looked for. Default 1 minute. */
  pruneEveryMs?: number;
  /** Messages of one store's queue held in memory; the rest wait in its log (disk, for SQLite). Default 2,000. */
  window?: number;
  /** Webhook endpoints on loopback, private, link-local (and such) addresses are allowed: tests, trusted networks. Default: refused (SSRF guard). */
  webhookAllowPrivate?: boolean;
  /** A webhook endpoint failing this long without a success is disabled. Default 24 h. */
  webhookDisableAfterMs?: number;
  /** The first wait before a failed webhook is sent again; doubled each time, capped at 1 h. Default 1 s. */
  webhookRetryBaseMs?: number;
  /** How long one webhook POST may take. Default 10 s. */
  webhookTimeoutMs?: number;
  /** Pickups waiting for drivers across every store: the hub's own bound. Default 100,000. */
  maxPickups?: number;
  /** Pickups one store may have in drivers' hands at once while others wait. Default: a fair share of the drivers' slots. */
  maxInHandsPerStore?: number;
  /** Delivery attempts per parcel before it goes back to its store (protocol/lifecycle.ts). Default 3. */
  maxAttempts?: number;
  /** Stores with their own maximum of attempts, overriding `maxAttempts`. */
  storeMaxAttempts?: Readonly<Record<string, number>>;
  logger?: Logger;
}

export interface Hub {
  /** The port the hub listens on (useful after `port: 0`). */
  readonly port: number;
  /** What the hub counts (Prometheus registry, and refusals by code for tests). */
  readonly metrics: Metrics;
  /** `http://localhost:PORT` (or the host given). */
  readonly url: string;
  /** Stops accepting, disconnects every client, and resolves when the port is free. Idempotent. */
  close(): Promise<void>;
}

/** What to run when an underlying connection closes: one 'close' listener per connection, however many sockets it carries. */
const closeHooks = new WeakMap<object, Array<() => void>>();
function onConnectionClose(conn: { once(event: 'close', listener: () => void): unknown }, hook: () => void): void {
  let hooks = closeHooks.get(conn);
  if (!hooks) {
    const list: Array<() => void> = [];
    hooks = list;
    closeHooks.set(conn, list);
    conn.once('close', () => {
      for (const run of list.splice(0)) run();
    });
  }
  hooks.push(hook);
}

/** How often the token keys and revocations are looked at again. */
const KEYRING_EVERY_MS = 1_000;

/** How long a delivered parcel's history is kept by default: 30 days. */
export const DEFAULT_RETENTION_MS = 30 * 86_400_000;

/** The dashboard's static files (web/ at the top of the package; dist/hub/hub.js is two levels down). */
const WEB_DIR = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../web/' : '../web/', import.meta.url));

/** Starts a hub; resolves once it is listening. */
export async function createHub(options: HubOptions = {}): Promise<Hub> {
  const logger = options.logger ?? createLogger();
  const keyring = options.keyring ?? (options.secret ? new Keyring(options.secret) : undefined);
  if (!options.allowAnonymous && !keyring) {
    throw new Error('a hub that requires tokens needs a secret (or allowAnonymous for the open lab mode)');
  }
  const metrics = new Metrics();
  const rateLimit: RateLimitOptions = { ...DEFAULT_RATE_LIMIT, ...options.rateLimit };
  const app = express();
  // the largest message or request body a client may send, on sockets and over HTTP alike
  const maxPayloadBytes = options.maxPayloadBytes ?? 64 * 1024;
  app.disable('x-powered-by');
  const httpServer = createServer(app);
  const listening = (): number => (httpServer.address() as AddressInfo | null)?.port ?? options.port ?? 3000;
  // the Host check guards the open lab mode against DNS rebinding; with tokens, any name may reach the hub
  const origins = new OriginPolicy(options.allowedOrigins ?? [], listening, options.allowAnonymous === true);
  const refusedOrigins = new RecentIds(100);
  const refuseOrigin = (error: CapsError, origin: string | undefined, host: string | undefined): void => {
    metrics.refuse(error.code);
    // a line per origin and host, not per request: a hostile page may retry without end
    const key = `${origin ?? ''} ${host ?? ''}`;
    if (refusedOrigins.has(key)) return;
    refusedOrigins.add(key);
    logger.warn('REFUSED ORIGIN', { reason: error.message, ...(origin !== undefined ? { origin } : {}), ...(host !== undefined ? { host } : {}) });
  };
  app.use((_req, res, next) => {
    // the dashboard loads its own script, style and socket only; nobody may frame it; no URL leaks in a Referer
    res.set({
      'Content-Security-Policy': "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
      'X-Content-Type-Options': 'nosniff',
      'X-Frame-Options': 'DENY',
      'Referrer-Policy': 'no-referrer',
      'Cross-Origin-Opener-Policy': 'same-origin',
    });
    next();
  });
  app.use((req, res, next) => {
    const error = origins.check(req.get('origin'), req.get('host'));
    if (!error) return next();
    refuseOrigin(error, req.get('origin'), req.get('host'));
    sendError(res, error, metrics);
  });
  const io: CapsServer = new Server(httpServer, {
    maxHttpBufferSize: maxPayloadBytes,
    // the handshake and the websocket upgrade: pages of other origins, and unknown host names, are refused
    allowRequest: (req, callback) => {
      const error = origins.check(req.headers.origin, req.headers.host);
      if (!error) return callback(null, true);
      refuseOrigin(error, req.headers.origin, req.headers.host);
      callback(`${error.code}: ${error.message}`, false);
    },
    // pages of other origins talk to the hub only when allowed (allowRequest refuses the rest)
    cors: { origin: (origin, callback) => callback(null, origin !== undefined && origins.check(origin, undefined) === undefined) },
  });
  coalesceWrites(io);
  const nsp = io.of(CAPS_NAMESPACE);
  const { storage, feed, adapterClient } = await openStorage(options);
  if (adapterClient) {
    // rooms span every hub on this Redis (dashboards hear steps recorded on any hub)
    io.adapter(createAdapter(adapterClient, { streamName: `${options.redisPrefix ?? 'caps:'}socket.io`, blockTimeInMs: 500 }));
  }
  const deliveryOptions: DeliveryOptions = {
    ...DEFAULT_DELIVERY,
    // the lab's hub sends a pickup to everyone but its sender; with tokens, exactly one driver
    // several hubs: each pickup to one driver (the pickups' consumer group); see openStorage
    dispatch: feed ? 'one' : (options.dispatch ?? (options.allowAnonymous ? 'broadcast' : 'one')),
    ...(options.ackTimeoutMs ? { ackTimeoutMs: options.ackTimeoutMs } : {}),
    ...(options.driverPrefetch ? { driverPrefetch: options.driverPrefetch } : {}),
    ...(options.maxInHandsPerStore ? { maxInHandsPerStore: options.maxInHandsPerStore } : {}),
    ...(options.window ? { window: options.window } : {}),
  };
  const delivery = new Delivery(io.of(CAPS_NAMESPACE), storage, logger, deliveryOptions, metrics, feed);
  // several hubs: live updates cross hubs only while someone watches on one of them
  const watchers = feed && storage instanceof RedisStorage ? new SharedWatchers(storage.redis, `${storage.keys.prefix}{watchers}`, feed.hubId, () => dashboards.localWatchers()) : undefined;
  const dashboards: Dashboards = new Dashboards(io.of(CAPS_NAMESPACE), delivery, metrics, watchers);
  watchers?.start();
  const retention = new Retention(storage, logger, { retentionMs: options.retentionMs ?? DEFAULT_RETENTION_MS, everyMs: options.pruneEveryMs ?? 60_000 });
  const allowAnonymous = options.allowAnonymous === true;
  const defaultMaxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  const storeMaxAttempts = options.storeMaxAttempts ?? {};
  /** A start that failed half-way: what was opened so far is closed. */
  const abandon = async (): Promise<void> => {
    delivery.close();
    watchers?.stop();
    await Promise.all([storage.close(), feed?.close(), adapterClient?.quit().catch(() => undefined)]);
  };
  // the outbox lives in Redis, shared by every hub, with Redis; beside the SQLite storage; in memory with memory storage
  const webhookTimeoutMs = options.webhookTimeoutMs ?? WEBHOOK_DEFAULTS.timeoutMs;
  let webhooks: Webhooks;
  try {
    const outbox =
      storage instanceof RedisStorage && feed
        ? new RedisOutbox({ redis: storage.redis, keys: storage.keys, hubId: feed.hubId, leaseMs: webhookTimeoutMs + LEASE_MARGIN_MS, replicated: () => storage.replicated() })
        : new SqliteOutbox({ ...(storage.kind === 'sqlite' ? { dir: options.dataDir ?? './data' } : {}), sync: options.sync ?? 'full' });
    webhooks = new Webhooks(
      { logger, registry: metrics.registry, parcel: (store, orderId) => storage.parcel(store, orderId) },
      {
        outbox,
        allowPrivate: options.webhookAllowPrivate === true,
        timeoutMs: webhookTimeoutMs,
        ...(options.webhookDisableAfterMs !== undefined ? { disableAfterMs: options.webhookDisableAfterMs } : {}),
        ...(options.webhookRetryBaseMs !== undefined ? { retryBaseMs: options.webhookRetryBaseMs } : {}),
      },
    );
  } catch (err) {
    await abandon();
    throw err;
  }

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok', uptime: process.uptime() });
  });
  app.get('/readyz', async (_req, res) => {
    try {
      await storage.ping();
      res.json({ status: 'ready', storage: storage.kind });
    } catch (err) {
      res.status(503).json({ status: 'not ready', storage: storage.kind, reason: err instanceof Error ? err.message : String(err) });
    }
  });
  app.get('/metrics', async (req, res) => {
    // outside lab mode, metrics (queue names are store names) need a dashboard token without a store
    if (!allowAnonymous) {
      try {
        const caller = callerOf(req, { keyring, allowAnonymous });
        if (caller.role !== 'dashboard' || caller.store !== undefined) throw new CapsError('CAPS_ERR_FORBIDDEN', 'metrics need a dashboard token for every store');
      } catch (err) {
        sendError(res, err, metrics);
        return;
      }
    }
    metrics.clients.reset();
    for (const socket of nsp.sockets.values()) metrics.clients.inc({ role: socket.data.role });
    metrics.queueDepth.reset();
    metrics.queueOldest.reset();
    for (const q of delivery.queueStats()) {
      metrics.queueDepth.set({ queue: q.queue }, q.depth);
      metrics.queueOldest.set({ queue: q.queue }, q.oldestAgeSeconds);
    }
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  const maxAttempts = (store: string): number => (Object.hasOwn(storeMaxAttempts, store) ? (storeMaxAttempts[store] as number) : defaultMaxAttempts);
  const publishing: PublishContext = { logger, storage, delivery, metrics, dashboards, maxAttempts, webhooks };
  app.use(pickupRoute(publishing, { keyring, allowAnonymous, maxPayloadBytes }));
  app.use('/api', shopApi(publishing, { keyring, allowAnonymous, maxPayloadBytes, ...(options.publicUrl ? { publicUrl: options.publicUrl } : {}) }));
  app.use('/api', webhookRoutes({ webhooks, metrics, keyring, allowAnonymous, maxPayloadBytes }));
  app.get('/api/openapi.json', (_req, res) => {
    res.json(OPENAPI);
  });
  app.use('/api', trackingApi({ storage, delivery, metrics, keyring, allowAnonymous, maxAttempts }));
  app.use(trackingPage({ storage, metrics, keyring }));
  app.get('/lifecycle.js', (_req, res) => {
    res.type('text/javascript').send(LIFECYCLE_SCRIPT);
  });
  app.use(express.static(WEB_DIR, { index: 'index.html', maxAge: 0 }));
  app.use((_req, res) => {
    res.status(404).json(fail('CAPS_ERR_NOT_FOUND'));
  });
  try {
    await delivery.load();
    await new Promise<void>((resolve, reject) => {
      httpServer.once('error', reject);
      httpServer.listen(options.port ?? 3000, options.host, () => {
        httpServer.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await webhooks.close();
    await abandon();
    throw err;
  }
  retention.start();
  webhooks.start();
  const expiry = new TokenExpiry();
  const refusals = new ConnectionRefusals(logger, metrics);
  const locations = new Locations();
  const limits = new ClientLimits(rateLimit, {
    total: options.maxConnections ?? DEFAULT_CONNECTION_LIMITS.total,
    perToken: options.maxConnectionsPerToken ?? DEFAULT_CONNECTION_LIMITS.perToken,
    perAddress: options.maxConnectionsPerAddress ?? DEFAULT_CONNECTION_LIMITS.perAddress,
  });
  io.of('/').use(onlyCaps(refusals, CAPS_NAMESPACE));
  nsp.use(authenticate({ keyring, allowAnonymous, logger, refusals }));
  nsp.use(admitTrackers(storage, refusals));
  let keyringVersion = keyring?.version ?? 0;
  let keyringProblem: string | undefined;
  let retirementSwept: number | undefined;
  const dropRevoked = (ring: Keyring): void => {
    try {
      ring.refresh();
      keyringProblem = undefined;
    } catch (err) {
      // a broken file is said (once, until it changes); what could be read is in force, the rest as before
      const reason = err instanceof Error ? err.message : String(err);
      if (reason !== keyringProblem) logger.warn('KEYRING NOT READ', { reason });
      keyringProblem = reason;
    }
    // also read again by a connect naming a new key: what changed since the last look counts
    const changed = ring.version !== keyringVersion;
    keyringVersion = ring.version;
    if (changed) logger.info('KEYRING RELOADED', { keys: ring.accepted().map((k) => k.kid).join(','), revoked: ring.revokedCount });
    // the sockets are walked when something changed, and once when the previous key retires
    const retires = ring.retiresAt;
    const retiredNow = retires !== undefined && !ring.inGrace && retires !== retirementSwept;
    if (!changed && !retiredNow) return;
    if (retiredNow) retirementSwept = retires;
    const accepted = new Set(ring.accepted().map((k) => k.kid));
    for (const socket of nsp.sockets.values()) {
      const { tokenId, keyId } = socket.data;
      const reason = tokenId !== undefined && ring.isRevoked(tokenId) ? 'TOKEN REVOKED' : keyId !== undefined && !accepted.has(keyId) ? 'TOKEN KEY RETIRED' : undefined;
      if (!reason) continue;
      logger.info(reason, { socket: socket.id, ...(tokenId !== undefined ? { token: tokenId } : {}), ...(keyId !== undefined ? { key: keyId } : {}) });
      socket.disconnect(true);
    }
  };
  // a rotation or a revocation reaches connected sockets within a second
  const keyTimer = keyring ? setInterval(() => dropRevoked(keyring), KEYRING_EVERY_MS) : undefined;
  keyTimer?.unref();
  nsp.use((socket, next) => {
    const { key, kind } = clientKey(socket.data.auth, socket.handshake.address);
    const refusal = limits.admit(key, kind);
    if (refusal) return next(refusals.refuse(socket, refusal));
    // given back once: when the socket leaves, or its connection closes before it got in
    let counted = true;
    const release = (): void => {
      if (!counted) return;
      counted = false;
      limits.leave(key);
    };
    socket.once('disconnect', release);
    onConnectionClose(socket.conn, release);
    socket.data.client = key;
    next();
  });
  // connections are taken only once the queues are loaded, so a backlog is never missed
  nsp.on('connection', (socket) => {
    trackExpiry(socket, expiry, logger);
    handleConnection({ ...publishing, rateLimit, limits, locations }, socket);
  });
  logger.info('STORAGE', {
    kind: storage.kind,
    ...(storage.kind === 'sqlite' ? { dir: options.dataDir ?? './data', sync: options.sync ?? 'full' } : {}),
    ...(storage.kind === 'redis' ? { redis: options.redisCluster ? `cluster ${options.redisCluster}` : redactUrl(options.redisUrl ?? ''), hub: feed?.hubId } : {}),
    webhooks: webhooks.where,
  });
  const port = (httpServer.address() as AddressInfo).port;
  const host = options.host && options.host !== '0.0.0.0' && options.host !== '::' ? options.host : 'localhost';
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  let closing: Promise<void> | undefined;
  return {
    port,
    url,
    metrics,
    close() {
      closing ??= (async () => {
        delivery.close();
        watchers?.stop();
        // several hubs: what this hub read for its drivers goes to the other hubs now, not once idle
        await delivery.releaseAll();
        dashboards.close();
        expiry.stop();
        clearInterval(keyTimer);
        await retention.close();
        await new Promise<void>((resolve) => {
          // io.close() closes the HTTP server too; idle keep-alive connections would hold it open
          httpServer.closeIdleConnections();
          void io.close(() => resolve());
        });
        // after the sockets: no publish is left to enqueue; attempts in flight go again after a restart
        await webhooks.close();
        await Promise.all([storage.close(), feed?.close(), adapterClient?.quit().catch(() => adapterClient.disconnect())]);
      })();
      return closing;
    },
  };
}

async function openStorage(options: HubOptions): Promise<{ storage: Storage; feed?: RedisFeed; adapterClient?: Redis | Cluster }> {
  const limits = {
    ...DEFAULT_LIMITS,
    ...(options.maxQueueDepth ? { maxQueueDepth: options.maxQueueDepth } : {}),
    ...(options.maxPickups ? { maxPickups: options.maxPickups } : {}),
    ...(options.window ? { window: options.window } : {}),
  };
  if (options.redisUrl || options.redisCluster) {
    if (options.dispatch === 'broadcast') throw new Error('--dispatch broadcast needs a single hub: with Redis, each pickup goes to one driver of one hub');
    const where = options.redisCluster ? { cluster: options.redisCluster } : { url: options.redisUrl ?? '' };
    const prefix = options.redisPrefix ?? 'caps:';
    const storage = new RedisStorage({ ...where, prefix, ...limits, ...(options.redisWaitReplicas ? { waitReplicas: options.redisWaitReplicas } : {}) });
    try {
      await storage.open();
    } catch (err) {
      await storage.close();
      const name = options.redisCluster ? `the Redis Cluster at ${options.redisCluster}` : `Redis at ${redactUrl(options.redisUrl ?? '')}`;
      throw new Error(`cannot reach ${name}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    const adapterClient = redisClient(where);
    adapterClient.on('error', () => undefined);
    return { storage, feed: new RedisFeed(storage), adapterClient };
  }
  if (options.storage === 'memory') return { storage: new MemoryStorage(limits) };
  return { storage: new SqliteStorage({ dir: options.dataDir ?? './data', sync: options.sync ?? 'full', ...limits }) };
}

/** A Redis URL without its password, for logs. */
function redactUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}
