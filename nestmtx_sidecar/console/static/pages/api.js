// API: /api/openapi.json rendered as a readable list of paths, methods and schemas.

import { getJson } from '../api.js';
import { byId, el, setText } from '../dom.js';

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

const MAX_DEPTH = 6; // schemas nest a few levels; this stops a self-referencing one

function resolve(schema, doc) {
  const ref = schema?.$ref;
  if (typeof ref !== 'string' || !ref.startsWith('#/components/schemas/')) return schema ?? {};
  return doc.components?.schemas?.[ref.split('/').pop()] ?? {};
}

function typeName(schema) {
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(' | ');
  const union = schema.anyOf ?? schema.oneOf;
  if (union) return union.map(typeName).join(' | ');
  const type = Array.isArray(schema.type) ? schema.type.join(' | ') : schema.type ?? 'any';
  if (type === 'array') return `array of ${typeName(schema.items ?? {})}`;
  return schema.format ? `${type} (${schema.format})` : type;
}

function limits(schema) {
  const parts = [];
  if (schema.minLength !== undefined) parts.push(`${schema.minLength}–${schema.maxLength} chars`);
  if (schema.minimum !== undefined) parts.push(`≥ ${schema.minimum}`);
  if (schema.maximum !== undefined) parts.push(`≤ ${schema.maximum}`);
  return parts.length ? ` [${parts.join(', ')}]` : '';
}

// A schema as a nested list a person can read: each field, its type, whether it is required.
function describe(raw, doc, depth = 0) {
  const schema = resolve(raw, doc);
  if (depth > MAX_DEPTH) return el('span', { className: 'muted' }, '…');
  if (schema.oneOf) {
    return el('ol', { className: 'schema-list' }, schema.oneOf.map((option) =>
      el('li', {}, 'either ', describe(option, doc, depth + 1))));
  }
  const items = Object.entries(schema.properties ?? {}).map(([name, property]) => {
    const child = resolve(property, doc);
    const required = (schema.required ?? []).includes(name);
    return el('li', {}, el('code', {}, name), ` ${typeName(child)}${limits(child)}`,
      required ? el('strong', {}, ' required') : null,
      child.description ? el('span', { className: 'muted' }, ` — ${child.description}`) : null,
      child.properties || child.oneOf ? describe(child, doc, depth + 1) : null);
  });
  if (!items.length) {
    return el('span', {}, typeName(schema),
      schema.description ? el('span', { className: 'muted' }, ` — ${schema.description}`) : null);
  }
  return el('ul', { className: 'schema-list' }, items);
}

function contentSchemas(content, doc) {
  return Object.entries(content ?? {}).map(([type, body]) => el('div', { className: 'schema' },
    el('span', { className: 'muted' }, type), describe(body.schema, doc)));
}

function operation(path, method, op, doc) {
  const parameters = (op.parameters ?? []).map((p) => el('li', {},
    el('code', {}, p.name), ` (${p.in}${p.required ? ', required' : ''})`,
    p.description ? ` — ${p.description}` : ''));
  const responses = Object.entries(op.responses ?? {}).map(([status, response]) =>
    el('li', {}, el('strong', {}, status), ` ${response.description ?? ''}`,
      contentSchemas(response.content, doc)));
  return el('details', { className: 'operation' },
    el('summary', {}, el('span', { className: `method method-${method}` }, method.toUpperCase()),
      ' ', el('code', {}, path), op.summary ? ` — ${op.summary}` : ''),
    op.description ? el('p', {}, op.description) : null,
    parameters.length ? [el('h3', {}, 'Parameters'), el('ul', {}, parameters)] : null,
    op.requestBody ? [el('h3', {}, 'Request body'), contentSchemas(op.requestBody.content, doc)]
      : null,
    responses.length ? [el('h3', {}, 'Responses'), el('ul', {}, responses)] : null);
}

export class ApiPage {
  constructor({ session }) {
    this.session = session;
    this.loaded = false;
  }

  async show() {
    if (this.loaded) return;
    try {
      const doc = await getJson('/api/openapi.json', this.session);
      const operations = Object.entries(doc.paths ?? {}).flatMap(([path, item]) =>
        METHODS.filter((m) => item[m]).map((m) => operation(path, m, item[m], doc)));
      const schemas = Object.entries(doc.components?.schemas ?? {}).map(([name, schema]) =>
        el('details', { className: 'operation' }, el('summary', {}, el('code', {}, name)),
          describe(schema, doc)));
      byId('api-doc').replaceChildren(el('div', {},
        el('p', {}, `${doc.info?.title ?? 'API'} ${doc.info?.version ?? ''} · OpenAPI ` +
          `${doc.openapi ?? ''}`),
        el('h2', {}, 'Paths'), ...operations,
        schemas.length ? el('h2', {}, 'Schemas') : null, ...schemas));
      this.loaded = true;
      setText(byId('api-error'), '');
    } catch (error) {
      setText(byId('api-error'), `The API description could not be loaded: ${error.message}`);
    }
  }
}
