export * from './errors.js';
export * from './result.js';
export * from './schemas.js';
export * from './lifecycle.js';
export * from './messages.js';
export * from './events.js';
