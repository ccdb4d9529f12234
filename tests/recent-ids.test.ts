import { describe, expect, it } from 'vitest';
import { RecentIds } from '../protocol/recent-ids.js';

describe('RecentIds', () => {
  it('tells a duplicate from a new id, remembers at least its capacity, and forgets past twice that', () => {
    const ids = new RecentIds(3);
    expect(['a', 'b', 'a', 'c'].map((id) => ids.add(id))).toEqual([true, true, false, true]);
    // a fourth id starts a new generation: the first three are still known
    expect(ids.add('d')).toBe(true);
    expect(['a', 'b', 'c', 'd'].map((id) => ids.has(id))).toEqual([true, true, true, true]);
    expect(ids.add('b')).toBe(false);
    for (const id of ['e', 'f']) ids.add(id);
    // 'g' fills a third generation: the first one (a, b, c) is dropped whole
    ids.add('g');
    expect(['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((id) => ids.has(id))).toEqual([false, false, false, true, true, true, true]);
  });
});
