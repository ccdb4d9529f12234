/** What `caps bench` runs: the targets and how they are named on the command line. */
import { UsageError } from '../cli/args.js';

/** `relay`: the bare Socket.IO relay (baseline); `memory`, `sqlite`, `redis`: CAPS with that store. */
export type Target = 'relay' | 'memory' | 'sqlite' | 'redis';
export const TARGETS: readonly Target[] = ['relay', 'memory', 'sqlite', 'redis'];
/** What runs when no target is named: redis needs a redis-server, and would not fit in two minutes. */
const DEFAULT_TARGETS: readonly Target[] = ['relay', 'memory', 'sqlite'];
const STORES = ['memory', 'sqlite', 'redis'] as const;

/**
 * The targets to run, in a fixed order (baseline first): from `--targets a,b` or, with `--store
 * S`, the relay and CAPS on S. A missing relay is added: every figure is a ratio to it.
 */
export function parseTargets(targets: string | undefined, store: string | undefined): Target[] {
  if (store !== undefined && !(STORES as readonly string[]).includes(store)) throw new UsageError(`--store must be one of ${STORES.join(', ')}; got '${store}'`);
  const wanted = new Set<string>();
  if (targets !== undefined) {
    for (const raw of targets.split(',')) {
      const name = raw.trim();
      if (name === '') continue;
      if (!(TARGETS as readonly string[]).includes(name)) throw new UsageError(`--targets: unknown target '${name}'; pick from ${TARGETS.join(', ')}`);
      wanted.add(name);
    }
    if (wanted.size === 0) throw new UsageError('--targets names no target');
  } else if (store !== undefined) {
    wanted.add(store);
  } else {
    for (const t of DEFAULT_TARGETS) wanted.add(t);
  }
  if (store !== undefined && targets !== undefined) wanted.add(store);
  wanted.add('relay');
  return TARGETS.filter((t) => wanted.has(t));
}
