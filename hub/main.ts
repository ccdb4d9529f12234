import type { CommandSpec } from '../cli/args.js';
import { runCommand, untilSignal, UsageError } from '../cli/args.js';
import { createHub } from './hub.js';
import { MAX_ATTEMPTS_LIMIT } from '../protocol/lifecycle.js';
import { LAB_MODE_TOLERATES } from './lab-mode.js';
import { createLogger } from './logger.js';
import type { RateLimitOptions } from './rate-limit.js';
import { normalizeOrigin } from './origin-policy.js';
import { Keyring } from './keyring.js';
import { loadSecret } from './secret.js';

export const hubCommand = {
  usage: 'caps hub',
  summary: 'Runs the CAPS hub: relays pickup, in-transit and delivered between vendors and drivers on the /caps namespace, keeps their queues, and serves the dashboard (/), the tracking API (/api), /healthz, /readyz and /metrics.',
  flags: {
    port: { type: 'integer', description: 'TCP port to listen on; 0 picks a free one', placeholder: 'PORT', default: 3000, env: 'PORT', min: 0, max: 65535 },
    host: { type: 'string', description: 'interface to listen on (default: every interface; with --allow-anonymous, 127.0.0.1 only)', placeholder: 'HOST' },
    'allowed-origins': {
      type: 'string',
      description:
        "comma-separated origins of web pages on other sites that may use the hub (https://shop.example.com), or * for any; the hub's own pages and localhost on its port always may. A domain name the hub is reached by must be the host of one of them",
      placeholder: 'LIST',
      env: 'CAPS_ALLOWED_ORIGINS',
    },
    'public-url': { type: 'string', description: "where customers reach this hub (https://track.example.com), for the tracking links it makes over HTTP; default: the host each request came to", placeholder: 'URL', env: 'CAPS_PUBLIC_URL' },
    'allow-anonymous': { type: 'boolean', description: "open lab mode: clients may connect without a token (the course's clients); tokens sent are still checked" },
    dispatch: { type: 'choice', description: 'one: each pickup goes to exactly one driver (the default with tokens); broadcast: to every connection but its sender, vendors and dashboards (the lab\'s hub; the default with --allow-anonymous)', choices: ['one', 'broadcast'] },
    store: { type: 'choice', description: 'where parcels and queues live: sqlite (durable) or memory (gone on restart); --redis or --redis-cluster implies redis', choices: ['sqlite', 'memory', 'redis'], default: 'sqlite', env: 'CAPS_STORE_KIND' },
    redis: { type: 'string', description: 'share queues, parcels and rooms with every hub on this Redis (run it with appendonly yes, appendfsync always); each pickup then goes to one driver', placeholder: 'URL', env: 'REDIS_URL' },
    'redis-cluster': { type: 'string', description: 'the same on a Redis Cluster: its seed nodes, host:port,host:port (stores are spread over its primaries)', placeholder: 'NODES', env: 'CAPS_REDIS_CLUSTER' },
    'redis-wait-replicas': {
      type: 'integer',
      description: 'with --redis: replicas that must have each step before it is acknowledged (Redis WAIT, 2 s at most, else the step is refused as temporary); 0: the primary alone. Not with --redis-cluster',
      placeholder: 'N',
      default: 0,
      min: 0,
      max: 16,
    },
    data: { type: 'string', description: 'folder of the SQLite storage, the webhook outbox (webhooks.sqlite) and the token secret (unless CAPS_SECRET is set)', placeholder: 'DIR', default: './data', env: 'CAPS_DATA' },
    sync: { type: 'choice', description: 'SQLite fsync: full survives power loss, normal only a killed process', choices: ['full', 'normal'], default: 'full' },
    'ack-timeout': { type: 'integer', description: "first wait for a client's ack before sending again (doubles each try)", placeholder: 'MS', default: 30000, min: 100 },
    'max-queue': { type: 'integer', description: "per store: pickups one store may have waiting for drivers (with --redis, also messages waiting for its vendors); past it, that store's pickups are refused with CAPS_ERR_QUEUE_FULL (no other store's)", placeholder: 'N', default: 10000, min: 1 },
    retention: { type: 'integer', description: "days a finished parcel's history (delivered, returned or cancelled) is kept, then removed in the background (parcels still under way are kept); 0 keeps it forever", placeholder: 'DAYS', default: 30, min: 0, max: 36500 },
    'max-pickups': { type: 'integer', description: 'pickups waiting for drivers across every store, the hub\'s own bound (a flood of new store names cannot grow past it); past it, pickups are refused with CAPS_ERR_QUEUE_FULL', placeholder: 'N', default: 100000, min: 1 },
    'max-attempts': { type: 'integer', description: "delivery attempts per parcel: a failed attempt goes back to the drivers until this many were made, then the parcel is returned to its store (refused and damaged parcels are returned at once)", placeholder: 'N', default: 3, min: 1, max: 20 },
    'store-max-attempts': { type: 'string', description: 'stores with their own maximum of attempts, e.g. acme=5,bakery=1 (overrides --max-attempts for them)', placeholder: 'STORE=N,...' },
    'max-in-hands': { type: 'integer', description: "pickups one store may have in drivers' hands at once while other stores wait (default: a fair share of the drivers' slots)", placeholder: 'N', min: 1 },
    'rate-limit': {
      type: 'integer',
      description: 'events one client (a token, or an address without one) may send per second over all its connections (bursts of twice that) before it is slowed; a connection that keeps going is cut off; 0: no limit (benchmarks, trusted networks)',
      placeholder: 'N',
      default: 500,
      min: 0,
    },
    'max-connections': { type: 'integer', description: 'connections the hub takes in all; past it, CAPS_ERR_TOO_MANY_CONNECTIONS; 0: no limit', placeholder: 'N', default: 20000, min: 0 },
    'max-connections-per-token': { type: 'integer', description: "connections of one token's holder (a store's vendor, a driver, a dashboard); 0: no limit", placeholder: 'N', default: 64, min: 0 },
    'max-connections-per-address': { type: 'integer', description: 'connections without a token from one address (the open lab mode); 0: no limit', placeholder: 'N', default: 256, min: 0 },
    'webhook-allow-private': {
      type: 'boolean',
      description: 'let stores register webhook endpoints on loopback, private (RFC 1918), link-local, CGNAT and unique-local addresses (refused by default, at registration and at each delivery: SSRF); for tests and trusted networks',
    },
    'webhook-retry-base': { type: 'integer', description: 'wait before a failed webhook is sent again; doubled each try (plus jitter), at most 1 hour', placeholder: 'MS', default: 1000, min: 1 },
    'webhook-disable-after': { type: 'integer', description: 'a webhook endpoint failing this long without a success is disabled (caps webhook enable turns it back on)', placeholder: 'MS', default: 86_400_000, min: 1 },
    json: { type: 'boolean', description: 'log one JSON object per line instead of readable lines' },
  },
  examples: ['caps hub --port 3000 --data ./data', "caps hub --allow-anonymous    # the course's open lab mode: its clients work unchanged", 'PORT=4000 caps hub --json --store memory'],
} as const satisfies CommandSpec;

export function runHub(argv: readonly string[]): Promise<number> {
  return runCommand(hubCommand, argv, async (flags) => {
    const logger = createLogger({ format: flags.json ? 'json' : 'human' });
    const allowAnonymous = flags['allow-anonymous'];
    if (allowAnonymous) {
      logger.warn('OPEN LAB MODE (--allow-anonymous): anyone who can reach this port may connect without a token, read every store\'s parcels and publish');
    }
    const allowedOrigins = (flags['allowed-origins'] ?? '').split(',').map((o) => o.trim()).filter((o) => o !== '');
    for (const origin of allowedOrigins) {
      if (origin === '*') continue;
      try {
        normalizeOrigin(origin);
      } catch {
        process.stderr.write(`caps hub: --allowed-origins: '${origin}' is not an origin (scheme://host[:port], e.g. https://shop.example.com)\nRun 'caps hub --help' to see the flags.\n`);
        return 2;
      }
    }
    const publicUrl = flags['public-url'];
    if (publicUrl !== undefined && !/^https?:$/.test(URL.canParse(publicUrl) ? new URL(publicUrl).protocol : '')) {
      process.stderr.write(`caps hub: --public-url must be an http(s) URL, e.g. https://track.example.com; got '${publicUrl}'\nRun 'caps hub --help' to see the flags.\n`);
      return 2;
    }
    if (flags['webhook-allow-private']) logger.warn('WEBHOOKS MAY REACH PRIVATE ADDRESSES (--webhook-allow-private): a store can make this hub POST to its loopback and private networks');
    // the open lab mode takes anyone who can reach the port: by default only this machine can
    const host = flags.host ?? (allowAnonymous ? '127.0.0.1' : undefined);
    if (allowAnonymous && flags.host === undefined) logger.info('LAB MODE listens on 127.0.0.1 only: --host 0.0.0.0 lets other machines in (anyone on the network, with no token)');
    if (flags.store === 'redis' && !flags.redis && !flags['redis-cluster']) {
      process.stderr.write('caps hub: --store redis needs --redis URL (or REDIS_URL) or --redis-cluster NODES\nRun \'caps hub --help\' to see the flags.\n');
      return 2;
    }
    if (flags.redis && flags['redis-cluster']) {
      process.stderr.write('caps hub: give --redis (one Redis) or --redis-cluster (a Redis Cluster), not both\nRun \'caps hub --help\' to see the flags.\n');
      return 2;
    }
    if (flags['redis-cluster'] && flags['redis-wait-replicas'] > 0) {
      process.stderr.write('caps hub: --redis-wait-replicas works with --redis (one primary), not with --redis-cluster\nRun \'caps hub --help\' to see the flags.\n');
      return 2;
    }
    if ((flags.redis || flags['redis-cluster']) && flags.dispatch === 'broadcast') {
      process.stderr.write('caps hub: --dispatch broadcast needs a single hub: with Redis, each pickup goes to one driver of one hub\nRun \'caps hub --help\' to see the flags.\n');
      return 2;
    }
    const storeMaxAttempts = flags['store-max-attempts'] !== undefined ? storeMaxAttemptsOf(flags['store-max-attempts']) : undefined;
    let hub;
    try {
      const { secret, source } = loadSecret(flags.data);
      const keyring = new Keyring(secret, flags.data, process.env);
      logger.info('TOKENS', { secret: source, key: keyring.current.kid, mint: `caps token --data ${flags.data} --role vendor --store NAME` });
      hub = await createHub({
        keyring,
        port: flags.port,
        host,
        allowAnonymous,
        allowedOrigins,
        ...(publicUrl !== undefined ? { publicUrl } : {}),
        ...(flags.dispatch ? { dispatch: flags.dispatch as 'one' | 'broadcast' } : {}),
        storage: flags.store as 'sqlite' | 'memory' | 'redis',
        ...(flags.redis ? { redisUrl: flags.redis, redisWaitReplicas: flags['redis-wait-replicas'] } : {}),
        ...(flags['redis-cluster'] ? { redisCluster: flags['redis-cluster'] } : {}),
        dataDir: flags.data,
        sync: flags.sync as 'full' | 'normal',
        ackTimeoutMs: flags['ack-timeout'],
        maxQueueDepth: flags['max-queue'],
        maxPickups: flags['max-pickups'],
        retentionMs: flags.retention * 86_400_000,
        ...(flags['max-in-hands'] !== undefined ? { maxInHandsPerStore: flags['max-in-hands'] } : {}),
        maxAttempts: flags['max-attempts'],
        ...(storeMaxAttempts ? { storeMaxAttempts } : {}),
        rateLimit: rateLimitOf(flags['rate-limit']),
        maxConnections: flags['max-connections'],
        maxConnectionsPerToken: flags['max-connections-per-token'],
        maxConnectionsPerAddress: flags['max-connections-per-address'],
        webhookAllowPrivate: flags['webhook-allow-private'],
        webhookRetryBaseMs: flags['webhook-retry-base'],
        webhookDisableAfterMs: flags['webhook-disable-after'],
        logger,
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE') {
        process.stderr.write(`caps hub: port ${flags.port} is in use; stop what uses it or pick another with --port\n`);
        return 1;
      }
      process.stderr.write(`caps hub: cannot start: ${err instanceof Error ? err.message : String(err)}\n`);
      return 1;
    }
    // listened for before the hub says it listens: whoever reads that line may stop it at once
    const stopped = untilSignal();
    const dispatch = flags.redis || flags['redis-cluster'] ? 'one' : (flags.dispatch ?? (allowAnonymous ? 'broadcast' : 'one'));
    if (allowAnonymous) {
      logger.info('LAB MODE: the course\'s clients work unchanged; it accepts:');
      for (const line of LAB_MODE_TOLERATES) logger.info(`  - ${line}`);
    }
    logger.info(`CAPS hub listening on ${hub.url} (namespace /caps, dispatch ${dispatch})`, { port: hub.port });
    const signal = await stopped;
    logger.info('STOPPING', { signal });
    await hub.close();
    logger.info('STOPPED');
    return 0;
  });
}

/** `--rate-limit N`: N events/s with bursts of 2N; 0 turns the limit off. */
export function rateLimitOf(perSecond: number): Partial<RateLimitOptions> {
  if (perSecond === 0) return { ratePerSecond: Infinity, burst: Infinity };
  return { ratePerSecond: perSecond, burst: 2 * perSecond };
}

/** `--store-max-attempts acme=5,bakery=1`: each store's maximum, 1 to MAX_ATTEMPTS_LIMIT. */
export function storeMaxAttemptsOf(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of text.split(',')) {
    const match = /^\s*([^=\s][^=]*?)\s*=\s*(\d+)\s*$/.exec(part);
    const n = match ? Number(match[2]) : NaN;
    if (!match || !Number.isInteger(n) || n < 1 || n > MAX_ATTEMPTS_LIMIT) {
      throw new UsageError(`--store-max-attempts: '${part}' is not STORE=N with N from 1 to ${MAX_ATTEMPTS_LIMIT}`);
    }
    out[match[1] as string] = n;
  }
  return out;
}
