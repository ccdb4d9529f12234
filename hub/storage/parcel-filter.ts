/**
 * A Bloom filter of parcel keys: `mightHave` is never false for a key that was added, and rarely
 * true for one that was not. The SQLite storage asks it before looking a parcel up on disk, so that a
 * new pickup (whose key is in no table yet) costs no query.
 *
 * Its size is fixed when it is made: past its capacity it answers `true` more often, which costs
 * lookups, never correctness.
 */
export class ParcelFilter {
  private readonly bits: Uint32Array;
  /** Bit positions are taken modulo `mask + 1`, a power of two. */
  private readonly mask: number;

  /** Room for `capacity` keys at a false-positive rate of about 0.25% (16 bits and 4 probes a key). */
  constructor(capacity: number) {
    let size = 1 << 16;
    while (size < capacity * 16 && size < 2 ** 31) size *= 2;
    this.bits = new Uint32Array(size / 32);
    this.mask = size - 1;
  }

  add(key: string): void {
    this.probe(key, true);
  }

  mightHave(key: string): boolean {
    return this.probe(key, false);
  }

  /** Visits the key's bits: sets them (`set`), or tells whether all are set. */
  private probe(key: string, set: boolean): boolean {
    hash(key);
    for (let i = 0; i < PROBES; i++) {
      const bit = (hashA + i * hashB) & this.mask;
      const word = this.bits[bit >>> 5] ?? 0;
      const mask = 1 << (bit & 31);
      if (set) this.bits[bit >>> 5] = word | mask;
      else if ((word & mask) === 0) return false;
    }
    return true;
  }
}

const PROBES = 4;

/** The two hashes of the last key given to hash(): module variables, so no array is made per key. */
let hashA = 0;
let hashB = 1;

/** Two 32-bit FNV-1a style hashes with different bases and primes, for double hashing; the second is odd. */
function hash(key: string): void {
  let a = 0x811c9dc5;
  let b = 0x01000193;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  // a final mix, so keys that differ only at the end spread over the whole range
  a = Math.imul(a ^ (a >>> 15), 0x2c1b3c6d);
  b = Math.imul(b ^ (b >>> 13), 0x297a2d39);
  hashA = (a ^ (a >>> 12)) >>> 0;
  hashB = ((b ^ (b >>> 16)) | 1) >>> 0;
}
