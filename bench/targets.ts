/** What `caps bench` runs: the targets and how they are named on the command line. */
import { UsageError } from '../cli/args.js';

/** `relay`: the bare Socket.IO relay (baseline); `memory`, `sqlite`: CAPS with that store. */
export type Target = 'relay' | 'memory' | 'sqlite';
export const TARGETS: readonly Target[] = ['relay', 'memory', 'sqlite'];

const NOT_MEASURED = new Set(['redis']);

function checkStore(name: string, source: string): void {
  if (NOT_MEASURED.has(name)) {
    throw new UsageError(`${source}: the bench does not measure the ${name} store yet (it would need a Redis of its own); use memory or sqlite`);
  }
}

/**
 * The targets to run, in a fixed order (baseline first): from `--targets a,b` or, with `--store
 * S`, the relay and CAPS on S. A missing relay is added: every figure is a ratio to it.
 */
export function parseTargets(targets: string | undefined, store: string | undefined): Target[] {
  if (store !== undefined) {
    checkStore(store, '--store');
    if (store !== 'memory' && store !== 'sqlite') throw new UsageError(`--store must be memory or sqlite; got '${store}'`);
  }
  const wanted = new Set<string>();
  if (targets !== undefined) {
    for (const raw of targets.split(',')) {
      const name = raw.trim();
      if (name === '') continue;
      checkStore(name, '--targets');
      if (!(TARGETS as readonly string[]).includes(name)) throw new UsageError(`--targets: unknown target '${name}'; pick from ${TARGETS.join(', ')}`);
      wanted.add(name);
    }
    if (wanted.size === 0) throw new UsageError('--targets names no target');
  } else if (store !== undefined) {
    wanted.add(store);
  } else {
    for (const t of TARGETS) wanted.add(t);
  }
  if (store !== undefined && targets !== undefined && !wanted.has(store)) wanted.add(store);
  wanted.add('relay');
  return TARGETS.filter((t) => wanted.has(t));
}
