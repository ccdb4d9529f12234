import { CAPS_ERROR_CODES } from '../protocol/errors.js';
import { LIMITS, PARCEL_EVENTS } from '../protocol/schemas.js';
import { FAILURE_REASONS } from '../protocol/lifecycle.js';
import { MAX_IDEMPOTENCY_KEY, MAX_TRACKING_LINK_SECONDS } from './shop-api.js';
import { MAX_WEBHOOK_URL } from './webhooks/routes.js';

/**
 * The HTTP API as OpenAPI 3.1, served at /api/openapi.json. tests/openapi.test.ts checks it
 * against the routes the hub really has, both ways.
 */

const error = {
  type: 'object',
  required: ['ok', 'error'],
  properties: {
    ok: { const: false },
    error: { type: 'object', required: ['code', 'message'], properties: { code: { enum: CAPS_ERROR_CODES }, message: { type: 'string' } } },
  },
};

const point = { type: 'object', required: ['lat', 'lng'], properties: { lat: { type: 'number', minimum: -90, maximum: 90 }, lng: { type: 'number', minimum: -180, maximum: 180 } } };
const proofRef = { type: 'string', maxLength: LIMITS.proofRef, description: 'an https: URL or sha256:<64 hex>: a reference, never the image' };

/** What a step told (protocol/schemas.ts STEP_DETAILS says which step may carry which). */
const details = {
  type: 'object',
  properties: {
    reason: { enum: FAILURE_REASONS, description: 'failed: why' },
    note: { type: 'string', maxLength: LIMITS.note },
    recipient: { type: 'string', description: 'delivered: who took it' },
    signature: proofRef,
    photo: proofRef,
    location: point,
    eta: { type: 'string', format: 'date-time', description: 'in-transit: when the driver expects to arrive' },
  },
};

const step = {
  type: 'object',
  required: ['event', 'time'],
  properties: {
    event: { enum: PARCEL_EVENTS },
    time: { type: 'string', format: 'date-time' },
    driver: { type: 'string' },
    attempt: { type: 'integer', minimum: 2, description: 'the attempt it belongs to, from the second on' },
    details,
  },
};

const parcel = {
  type: 'object',
  required: ['store', 'orderId', 'customer', 'address', 'state', 'history'],
  properties: {
    store: { type: 'string' },
    orderId: { type: 'string' },
    customer: { type: 'string' },
    address: { type: 'string' },
    state: { enum: PARCEL_EVENTS },
    attempts: { type: 'integer', minimum: 1, description: 'delivery attempts so far' },
    driver: { type: 'string' },
    history: { type: 'array', items: step },
  },
};

const storeSummary = {
  type: 'object',
  required: ['store', 'counts', 'maxAttempts'],
  properties: {
    store: { type: 'string' },
    counts: { type: 'object', description: 'parcels per state', additionalProperties: { type: 'integer', minimum: 0 } },
    maxAttempts: { type: 'integer', minimum: 1, description: "the store's maximum of delivery attempts (--max-attempts, --store-max-attempts)" },
  },
};

const webhook = {
  type: 'object',
  required: ['id', 'store', 'url', 'events', 'state', 'pending', 'created'],
  properties: {
    id: { type: 'string' },
    store: { type: 'string' },
    url: { type: 'string' },
    events: { type: ['array', 'null'], items: { enum: PARCEL_EVENTS }, description: 'null: every event' },
    state: { enum: ['active', 'disabled'] },
    disabledReason: { type: 'string' },
    disabledAt: { type: 'string', format: 'date-time' },
    lastError: { type: 'string' },
    lastErrorAt: { type: 'string', format: 'date-time' },
    lastSuccessAt: { type: 'string', format: 'date-time' },
    pending: { type: 'integer', description: 'events waiting to be delivered to it' },
    created: { type: 'string', format: 'date-time' },
  },
};

const okOf = (data: object): object => ({ type: 'object', required: ['ok', 'data'], properties: { ok: { const: true }, data } });
const json = (schema: object): object => ({ content: { 'application/json': { schema } } });
const errors = { '400': { description: 'Invalid request', ...json(error) }, '401': { description: 'No valid token', ...json(error) }, '403': { description: 'Not allowed for this token', ...json(error) } };
const pathParam = (name: 'store' | 'orderId', description: string): object => ({ name, in: 'path', required: true, schema: { type: 'string', maxLength: name === 'store' ? LIMITS.name : LIMITS.orderId }, description });

/** A webhook endpoint of a store, by its id; and its 404. */
const endpointParams = [pathParam('store', 'the store'), { name: 'id', in: 'path', required: true, schema: { type: 'string' }, description: 'the endpoint id (wh_...)' }];
const noEndpoint = { '404': { description: 'No such endpoint in this store', ...json(error) } };

export const OPENAPI = {
  openapi: '3.1.0',
  info: {
    title: 'CAPS hub HTTP API',
    version: '1',
    description:
      'Answers { ok: true, data } or { ok: false, error: { code, message } } with the code\'s HTTP status. Authorization: Bearer <token> (caps token), except in the open lab mode.',
  },
  components: { securitySchemes: { token: { type: 'http', scheme: 'bearer' } } },
  security: [{ token: [] }],
  paths: {
    '/api/packages/{orderId}': {
      get: {
        summary: "A parcel's timeline (another store's parcel is not found)",
        parameters: [pathParam('orderId', 'the order id'), { name: 'store', in: 'query', schema: { type: 'string' }, description: 'which store, when two use the same orderId' }],
        responses: { '200': { description: 'The parcel', ...json(okOf(parcel)) }, '404': { description: 'No such parcel', ...json(error) }, ...errors },
      },
    },
    '/api/stores': {
      get: {
        summary: 'Every store with parcels, and how many are in each state (a store token: its own)',
        responses: { '200': { description: 'The stores', ...json(okOf({ type: 'object', properties: { stores: { type: 'array', items: storeSummary } } })) }, ...errors },
      },
    },
    '/api/stores/{store}/packages': {
      get: {
        summary: "A store's parcels, newest first, a page at a time",
        parameters: [
          pathParam('store', 'the store'),
          { name: 'status', in: 'query', schema: { enum: PARCEL_EVENTS } },
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 100, default: 20 } },
          { name: 'cursor', in: 'query', schema: { type: 'string' }, description: 'the next page: `next` of the page before' },
        ],
        responses: { '200': { description: 'A page', ...json(okOf({ type: 'object', properties: { store: { type: 'string' }, packages: { type: 'array', items: parcel }, next: { type: ['string', 'null'] } } })) }, ...errors },
      },
    },
    '/api/stores/{store}/parcels': {
      post: {
        summary: 'Creates a parcel (a pickup for the drivers), with a vendor token of that store',
        parameters: [
          pathParam('store', 'the store'),
          {
            name: 'Idempotency-Key',
            in: 'header',
            schema: { type: 'string', minLength: 1, maxLength: MAX_IDEMPOTENCY_KEY },
            description: 'Without an orderId, names the parcel: a retry with the same key finds the same parcel (even after a hub restart); the same key with another body is refused (422).',
          },
        ],
        requestBody: {
          required: true,
          ...json({ type: 'object', required: ['customer', 'address'], properties: { orderId: { type: 'string' }, customer: { type: 'string' }, address: { type: 'string' }, store: { type: 'string', description: 'if given, the path\'s' } } }),
        },
        responses: {
          '201': { description: 'Created', ...json(okOf({ ...parcel, properties: { ...parcel.properties, status: { const: 'created' } } })) },
          '200': { description: 'It existed already (header Idempotent-Replayed: true)', ...json(okOf({ ...parcel, properties: { ...parcel.properties, status: { const: 'existing' } } })) },
          '422': { description: 'The Idempotency-Key was used for another body', ...json(error) },
          '503': { description: 'Queue full or storage unavailable: retry', ...json(error) },
          ...errors,
        },
      },
    },
    '/api/stores/{store}/parcels/{orderId}/steps': {
      post: {
        summary: "Reports a parcel's step over HTTP: a driver's (in-transit, delivered, failed, returned) with its driver token, a cancel with a vendor token of the store",
        parameters: [pathParam('store', 'the store'), pathParam('orderId', 'the parcel')],
        requestBody: {
          required: true,
          ...json({
            type: 'object',
            required: ['event'],
            properties: { event: { enum: PARCEL_EVENTS.filter((e) => e !== 'pickup') }, attempt: { type: 'integer', minimum: 1 }, ...details.properties },
          }),
        },
        responses: {
          '200': {
            description: 'Recorded, or a duplicate of a step recorded before (duplicate: true, header Idempotent-Replayed: true)',
            ...json(okOf({ type: 'object', required: ['event', 'store', 'orderId', 'duplicate'], properties: { event: { enum: PARCEL_EVENTS }, store: { type: 'string' }, orderId: { type: 'string' }, duplicate: { type: 'boolean' }, reattempt: { type: 'boolean' } } })),
          },
          '404': { description: 'No such parcel', ...json(error) },
          '409': { description: 'The step cannot follow the parcel\'s state, or names an attempt that is over', ...json(error) },
          ...errors,
        },
      },
    },
    '/api/stores/{store}/parcels/{orderId}/cancel': {
      post: {
        summary: 'Cancels a parcel not delivered yet, with a vendor token of that store: a pickup still waiting leaves the drivers, a driver holding it is told',
        parameters: [pathParam('store', 'the store'), pathParam('orderId', 'the parcel')],
        requestBody: { required: false, ...json({ type: 'object', properties: { note: { type: 'string', maxLength: LIMITS.note } }, additionalProperties: false }) },
        responses: {
          '200': {
            description: 'Cancelled (status cancelled), or it was already (status already-cancelled, header Idempotent-Replayed: true)',
            ...json(okOf({ ...parcel, properties: { ...parcel.properties, status: { enum: ['cancelled', 'already-cancelled'] } } })),
          },
          '404': { description: 'No such parcel in this store', ...json(error) },
          '409': { description: 'Too late: delivered, failed (being returned) or returned', ...json(error) },
          ...errors,
        },
      },
    },
    '/api/stores/{store}/parcels/{orderId}/tracking-link': {
      post: {
        summary: "A customer's tracking link for one parcel (/track/<token>: that parcel's page, nothing else of the store), with a vendor token of that store",
        parameters: [pathParam('store', 'the store'), pathParam('orderId', 'the parcel')],
        requestBody: {
          required: false,
          ...json({ type: 'object', properties: { expiresInSeconds: { type: 'integer', minimum: 60, maximum: MAX_TRACKING_LINK_SECONDS, default: 30 * 86_400, description: 'how long the link works' } } }),
        },
        responses: {
          '201': {
            description: 'A new link (each call mints another; caps token revoke --id <tokenId> withdraws one)',
            ...json(okOf({ type: 'object', required: ['url', 'token', 'expiresAt'], properties: { url: { type: 'string' }, token: { type: 'string' }, expiresAt: { type: 'string', format: 'date-time' }, tokenId: { type: 'string' } } })),
          },
          '404': { description: 'No such parcel in this store', ...json(error) },
          ...errors,
        },
      },
    },
    '/api/stores/{store}/webhooks': {
      post: {
        summary: "Registers a signed webhook endpoint for the store's parcel events (README, Webhooks), with a vendor token of that store",
        parameters: [pathParam('store', 'the store')],
        requestBody: {
          required: true,
          ...json({
            type: 'object',
            required: ['url'],
            properties: {
              url: { type: 'string', maxLength: MAX_WEBHOOK_URL, description: 'http(s); refused if it resolves to a loopback, private or link-local address, unless the hub runs with --webhook-allow-private' },
              events: { type: 'array', minItems: 1, items: { enum: PARCEL_EVENTS }, description: 'default: every event' },
            },
          }),
        },
        responses: {
          '201': { description: 'Registered: the signing secret is in this answer only', ...json(okOf({ ...webhook, required: [...webhook.required, 'secret'], properties: { ...webhook.properties, secret: { type: 'string', description: 'whsec_...' } } })) },
          ...errors,
        },
      },
      get: {
        summary: "The store's webhook endpoints: state (disabled, and why), last error, events pending; never their secrets",
        parameters: [pathParam('store', 'the store')],
        responses: { '200': { description: 'The endpoints', ...json(okOf({ type: 'object', properties: { store: { type: 'string' }, webhooks: { type: 'array', items: webhook } } })) }, ...errors },
      },
    },
    '/api/stores/{store}/webhooks/{id}': {
      delete: {
        summary: 'Removes a webhook endpoint and the events waiting for it',
        parameters: endpointParams,
        responses: { '200': { description: 'Removed', ...json(okOf({ type: 'object', properties: { id: { type: 'string' }, removed: { const: true } } })) }, ...noEndpoint, ...errors },
      },
    },
    '/api/stores/{store}/webhooks/{id}/enable': {
      post: {
        summary: 'Enables an endpoint again (after the hub disabled it): the events that waited go at once, in order',
        parameters: endpointParams,
        responses: { '200': { description: 'Active', ...json(okOf(webhook)) }, ...noEndpoint, ...errors },
      },
    },
    '/track/{token}': {
      get: {
        summary: "A customer's tracking page (HTML): the parcel's state, its timeline and, in transit, the driver's position, live",
        security: [],
        parameters: [{ name: 'token', in: 'path', required: true, schema: { type: 'string' }, description: 'a tracking link token (caps token --track, or the tracking-link route)' }],
        responses: { '200': { description: 'The page', content: { 'text/html': {} } }, '404': { description: 'A link that does not work (expired, withdrawn, malformed) or a parcel not known: a plain page, the same for each', content: { 'text/html': {} } } },
      },
    },
    '/api/queues': {
      get: { summary: 'Queues, their depth and the age of their oldest message (a store token: its own)', responses: { '200': { description: 'The queues', ...json(okOf({ type: 'object' })) }, ...errors } },
    },
    '/api/drivers': {
      get: { summary: 'Drivers online and what each holds (a store token: those holding its parcels)', responses: { '200': { description: 'The drivers', ...json(okOf({ type: 'object' })) }, ...errors } },
    },
    '/api/openapi.json': {
      get: { summary: 'This document', security: [], responses: { '200': { description: 'OpenAPI 3.1' } } },
    },
    '/pickup': {
      post: {
        summary: "Lab 12's stretch goal: a pickup from a JSON order { store, orderId, customer, address }",
        requestBody: { required: true, ...json({ type: 'object', required: ['store', 'orderId', 'customer', 'address'] }) },
        responses: { '201': { description: 'New' }, '200': { description: 'A duplicate' }, ...errors },
      },
    },
    '/healthz': { get: { summary: 'The process is up', security: [], responses: { '200': { description: 'ok' } } } },
    '/readyz': { get: { summary: 'The storage takes writes', security: [], responses: { '200': { description: 'ready' }, '503': { description: 'not ready, with the reason' } } } },
    '/metrics': { get: { summary: 'Prometheus metrics (a dashboard token for every store)', responses: { '200': { description: 'Prometheus text' }, ...errors } } },
  },
} as const;
