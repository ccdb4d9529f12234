import { CapsError } from '../protocol/errors.js';
import { subjectOf } from '../protocol/token.js';
import type { Keyring } from './keyring.js';
import type { Expiring, TokenExpiry } from './expiry.js';
import type { Logger } from './logger.js';
import type { ConnectionRefusals } from './refusals.js';
import type { CapsSocket } from './types.js';

export interface AuthOptions {
  /** The token keys and revocations; undefined: a hub with no secret (lab mode only). */
  keyring: Keyring | undefined;
  allowAnonymous: boolean;
  logger: Logger;
  refusals: ConnectionRefusals;
  /** Where sockets with an expiring token are tracked until it expires. */
  expiry: TokenExpiry<Expiring>;
}

/**
 * Namespace middleware: checks `auth.token` from the handshake. A refused connection gets
 * `connect_error` with `err.data = { code, message }`. In open lab mode a client without a token
 * is let in anonymously; a token it does send must still be valid.
 */
export function authenticate(options: AuthOptions) {
  return (socket: CapsSocket, next: (err?: Error) => void): void => {
    const auth: unknown = socket.handshake.auth;
    const token = auth !== null && typeof auth === 'object' ? (auth as Record<string, unknown>)['token'] : undefined;
    if (token === undefined && options.allowAnonymous) {
      next();
      return;
    }
    try {
      if (!options.keyring) throw new CapsError('CAPS_ERR_UNAUTHORIZED', 'this hub has no secret and accepts no tokens');
      const claims = options.keyring.verify(token);
      socket.data.auth = subjectOf(claims);
      // what a revocation or the end of a key's grace period is checked against, while connected
      if (claims.jti !== undefined) socket.data.tokenId = claims.jti;
      if (claims.kid !== undefined) socket.data.keyId = claims.kid;
      if (claims.exp !== undefined) {
        // a token is good until it expires, not for as long as the connection lasts
        const tracked: Expiring = {
          expire: () => {
            options.logger.info('TOKEN EXPIRED', { socket: socket.id, role: claims.role });
            socket.disconnect(true);
          },
        };
        options.expiry.track(tracked, claims.exp * 1000);
        socket.once('disconnect', () => options.expiry.forget(tracked));
      }
      next();
    } catch (err) {
      const capsError = err instanceof CapsError ? err : new CapsError('CAPS_ERR_UNAUTHORIZED', undefined, { cause: err });
      const refusal = options.refusals.refuse(socket, capsError);
      next(refusal);
    }
  };
}
