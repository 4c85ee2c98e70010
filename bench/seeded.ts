// Deterministic pseudo-random text for the benchmarks: the same bytes on every run.

/** A fixed-seed generator (mulberry32) and two helpers over it. */
export function seeded(seed: number): { random: () => number; pick: <T>(list: readonly T[]) => T; int: (low: number, high: number) => number } {
  let state = seed;
  const random = () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
  return { random, pick, int };
}

export const USERS = ['mara', 'jonas', 'li.wei', 'amelie', 'tomasz', 'noor', 'kofi', 'sofia', 'zoë', 'josé'];
export const FOLDERS = ['inbox', 'projects', 'household', 'reading', 'travel', 'archive', 'work/meetings', 'garden'];
