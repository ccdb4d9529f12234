import type { Cluster, Redis } from 'ioredis';

/** How often a hub says whether it has watchers, and looks whether any hub has. */
const REFRESH_MS = 1_000;
/** A hub's word lasts this long: a hub that died stops counting soon after. */
const LASTS_MS = 3 * REFRESH_MS;

/**
 * Several hubs: whether a dashboard or a tracking page is open on any hub. Live updates for them
 * go through the Socket.IO adapter to every hub, which every hub reads and decodes; while nobody
 * watches anywhere, a step costs no broadcast at all (an idle hub then hears nothing). Each hub
 * with watchers keeps its id in one sorted set, scored by when its word lapses; a hub learns of
 * another's first watcher within REFRESH_MS (a dashboard loads what it missed over HTTP).
 */
export class SharedWatchers {
  private anyone = false;
  /** This hub had watchers at the last count (or one arrived since): read per step, counted once a second. */
  private here = false;
  private timer: NodeJS.Timeout | undefined;
  private said = false;

  constructor(
    private readonly redis: Redis | Cluster,
    /** One key, so one slot on a cluster. */
    private readonly key: string,
    private readonly hubId: string,
    /** How many watchers this hub has now. */
    private readonly local: () => number,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.refresh(), REFRESH_MS);
    // prevents the timer from keeping the process alive
    this.timer.unref();
    void this.refresh();
  }

  /** True when a dashboard or tracking page may be open on some hub (this one included). */
  anywhere(): boolean {
    return this.anyone || this.here;
  }

  /** A watcher came on this hub: say so now, not at the next refresh. */
  arrived(): void {
    this.here = true;
    if (!this.said) void this.refresh();
  }

  private async refresh(): Promise<void> {
    const now = Date.now();
    this.here = this.local() > 0;
    try {
      if (this.here) {
        await this.redis.zadd(this.key, now + LASTS_MS, this.hubId);
        this.said = true;
      } else if (this.said) {
        await this.redis.zrem(this.key, this.hubId);
        this.said = false;
      }
      // hubs whose word lapsed (gone) are dropped; whoever is left watches
      await this.redis.zremrangebyscore(this.key, '-inf', now);
      this.anyone = (await this.redis.zcard(this.key)) > 0;
    } catch {
      // Redis away: broadcast as if someone watched (what a dashboard misses it loads over HTTP)
      this.anyone = true;
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
