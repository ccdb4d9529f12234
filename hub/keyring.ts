import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CapsError } from '../protocol/errors.js';
import type { TokenClaims } from '../protocol/token.js';
import { keyId, peekClaims, verifyToken } from '../protocol/token.js';
import { checkPrivateFile } from './data-folder.js';
import { loadSecret, readSecret } from './secret.js';

/** A signing key: its id (in the tokens it signs), the secret, and until when it is accepted (ms; none for the current key). */
export interface Key {
  kid: string;
  secret: string;
  until?: number;
}

/** The files of a data folder's keys and revocations. */
export const PREVIOUS_FILE = 'secret.previous';
export const REVOKED_FILE = 'revoked';

const STAKES = { risk: 'can forge or revive tokens', removed: 'tokens of the old key stop working' } as const;
/** What the refusals say is at stake with the list of revoked tokens (read here, written by caps token revoke). */
export const REVOKED_STAKES = { risk: 'can revive a revoked token', removed: 'every revoked token works again' } as const;

/**
 * The keys tokens may be signed with (the current one, and the one before it during its grace
 * period after `caps secret rotate`) and the ids of revoked tokens (`caps token revoke`). Read from
 * the data folder (or CAPS_SECRET and CAPS_SECRET_PREVIOUS), and read again by `refresh()` when
 * the files change, so a running hub takes a rotation or a revocation within a second.
 */
export class Keyring {
  private keys: Key[];
  /** Revoked token ids (those past their token's expiry are left out when the file is read). */
  private revoked = new Set<string>();
  private stamps = '';
  /** Counts the reloads: whoever acts on a change (dropping connected sockets) compares it. */
  version = 0;
  private content = '';

  constructor(
    current: string,
    private readonly dataDir: string | undefined = undefined,
    private readonly env: NodeJS.ProcessEnv = {},
    private readonly now: () => number = Date.now,
  ) {
    this.keys = [{ kid: keyId(current), secret: current }];
    this.refresh();
  }

  /** The hub's keyring: its data folder's keys, or CAPS_SECRET's. */
  static load(dataDir: string, env: NodeJS.ProcessEnv = process.env): Keyring {
    return new Keyring(loadSecret(dataDir, env).secret, dataDir, env);
  }

  /** The key new tokens are signed with. */
  get current(): Key {
    return this.keys[0] as Key;
  }

  /** Every key accepted now. */
  accepted(): Key[] {
    const now = this.now();
    return this.keys.filter((k) => k.until === undefined || k.until > now);
  }

  /** Checks a token's signature (with the key its `kid` names, or any accepted key), expiry and revocation. */
  verify(token: unknown): TokenClaims {
    return this.verifyWithKey(token).claims;
  }

  /** As verify, and which key signed it (a token minted before key ids has none of its own: this names it). */
  verifyWithKey(token: unknown): { claims: TokenClaims; kid: string } {
    const kid = typeof token === 'string' ? peekClaims(token)?.kid : undefined;
    // a key this hub has not seen yet may be a rotation of the last second: read the files again first
    if (kid !== undefined && !this.keys.some((k) => k.kid === kid)) this.tryRefresh();
    const keys = this.accepted();
    const candidates = kid !== undefined ? keys.filter((k) => k.kid === kid) : keys;
    if (kid !== undefined && candidates.length === 0) {
      throw new CapsError('CAPS_ERR_UNAUTHORIZED', `the token was signed with key ${kid}, which this hub no longer accepts: mint a new one with caps token`);
    }
    let failure: unknown = new CapsError('CAPS_ERR_UNAUTHORIZED', 'a token is required: auth: { token }');
    for (const key of candidates) {
      try {
        const claims = verifyToken(key.secret, token, this.now());
        if (claims.jti !== undefined && this.isRevoked(claims.jti)) throw new CapsError('CAPS_ERR_UNAUTHORIZED', `token ${claims.jti} was revoked`);
        return { claims, kid: key.kid };
      } catch (err) {
        failure = err;
        // a bad signature may be the other key's: try it; anything else is the answer
        if (!(err instanceof CapsError && err.message.startsWith('the token signature'))) break;
      }
    }
    throw failure;
  }

  /** True while an old key is in its grace period: connected tokens of it must be dropped when it ends. */
  get inGrace(): boolean {
    const end = this.retiresAt;
    return end !== undefined && end > this.now();
  }

  /** When the previous key stops being accepted, if there is one with an end. */
  get retiresAt(): number | undefined {
    return this.keys.find((k) => k.until !== undefined)?.until;
  }

  /** How many token ids are revoked (and not yet past their token's expiry). */
  get revokedCount(): number {
    return this.revoked.size;
  }

  isRevoked(jti: string): boolean {
    return this.revoked.has(jti);
  }

  private tryRefresh(): void {
    try {
      this.refresh();
    } catch {
      // a broken file: the hub's sweep says so; the keys read before stay in force
    }
  }

  /**
   * Reads the previous key and the revocations again if their files changed (a stat each, cheap
   * enough for once a second). True when something changed.
   */
  refresh(): boolean {
    if (this.dataDir === undefined && this.env['CAPS_SECRET_PREVIOUS'] === undefined) return false;
    const files = this.dataDir !== undefined ? [join(this.dataDir, 'secret'), join(this.dataDir, PREVIOUS_FILE), join(this.dataDir, REVOKED_FILE)] : [];
    const stamps = files.map((f) => stamp(f)).join('|');
    if (stamps === this.stamps) return false;
    // each file on its own: a broken previous key must not keep revocations from taking effect
    const problems: unknown[] = [];
    const attempt = <T>(read: () => T, otherwise: T): T => {
      try {
        return read();
      } catch (err) {
        problems.push(err);
        return otherwise;
      }
    };
    const dir = this.dataDir;
    const fromEnv = this.env['CAPS_SECRET'];
    const current =
      fromEnv !== undefined && fromEnv !== ''
        ? key(fromEnv)
        : attempt(() => (dir !== undefined && checkPrivateFile(join(dir, 'secret'), STAKES) ? key(readSecret(join(dir, 'secret'))) : this.current), this.current);
    const previousEnv = this.env['CAPS_SECRET_PREVIOUS'];
    const previous =
      previousEnv !== undefined && previousEnv !== ''
        ? key(previousEnv)
        : attempt(() => (dir !== undefined ? readPrevious(join(dir, PREVIOUS_FILE)) : undefined), this.keys[1]);
    this.keys = previous ? [current, previous] : [current];
    if (dir !== undefined) this.revoked = attempt(() => readRevoked(join(dir, REVOKED_FILE), this.now()), this.revoked);
    // a version per content, not per read: a file read again (after a problem) with nothing new is no change
    const content = `${this.keys.map((k) => `${k.kid}:${k.until ?? ''}`).join(',')}|${[...this.revoked].join(',')}`;
    if (content !== this.content) {
      this.content = content;
      this.version++;
    }
    // a file that could not be read is read again next time (and said again by the caller)
    this.stamps = problems.length === 0 ? stamps : '';
    if (problems.length > 0) throw problems[0];
    return true;
  }

}

function key(secret: string): Key {
  return { kid: keyId(secret), secret };
}

/** mtime and size of a file, or `-` when there is none. */
function stamp(file: string): string {
  try {
    const s = statSync(file);
    return `${s.mtimeMs}:${s.size}:${s.ino}`;
  } catch {
    return '-';
  }
}

/** `secret.previous`: `{ "secret": "...", "until": "ISO time" }`, written by caps secret rotate. */
function readPrevious(file: string): Key | undefined {
  if (!checkPrivateFile(file, STAKES)) return undefined;
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as { secret?: unknown; until?: unknown };
  if (typeof parsed.secret !== 'string' || typeof parsed.until !== 'string') throw new Error(`${file} is not a previous key written by caps secret rotate`);
  return { kid: keyId(parsed.secret), secret: parsed.secret, until: Date.parse(parsed.until) };
}

/** `revoked`: a line per token id, `<jti> <expiry ISO time | never>`; ids past their token's expiry are dropped. */
function readRevoked(file: string, now: number): Set<string> {
  const revoked = new Set<string>();
  if (!checkPrivateFile(file, REVOKED_STAKES)) return revoked;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [jti, until] = line.trim().split(/\s+/);
    if (!jti) continue;
    const at = until === undefined || until === 'never' ? Infinity : Date.parse(until);
    // an expiry that cannot be read is kept: revoked for good
    if (Number.isNaN(at) || at > now) revoked.add(jti);
  }
  return revoked;
}
