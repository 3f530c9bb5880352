// API: /api/openapi.json rendered as a readable list of paths, methods and schemas.

import { getJson } from '../api.js';
import { byId, el, setText } from '../dom.js';

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

function schemaText(schema) {
  return JSON.stringify(schema ?? {}, null, 2);
}

function contentSchemas(content) {
  return Object.entries(content ?? {}).map(([type, body]) => el('div', { className: 'schema' },
    el('span', { className: 'muted' }, type), el('pre', {}, schemaText(body.schema))));
}

function operation(path, method, op) {
  const parameters = (op.parameters ?? []).map((p) => el('li', {},
    el('code', {}, p.name), ` (${p.in}${p.required ? ', required' : ''})`,
    p.description ? ` — ${p.description}` : ''));
  const responses = Object.entries(op.responses ?? {}).map(([status, response]) =>
    el('li', {}, el('strong', {}, status), ` ${response.description ?? ''}`,
      contentSchemas(response.content)));
  return el('details', { className: 'operation' },
    el('summary', {}, el('span', { className: `method method-${method}` }, method.toUpperCase()),
      ' ', el('code', {}, path), op.summary ? ` — ${op.summary}` : ''),
    op.description ? el('p', {}, op.description) : null,
    parameters.length ? [el('h3', {}, 'Parameters'), el('ul', {}, parameters)] : null,
    op.requestBody ? [el('h3', {}, 'Request body'), contentSchemas(op.requestBody.content)]
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
        METHODS.filter((m) => item[m]).map((m) => operation(path, m, item[m])));
      const schemas = Object.entries(doc.components?.schemas ?? {}).map(([name, schema]) =>
        el('details', { className: 'operation' }, el('summary', {}, el('code', {}, name)),
          el('pre', {}, schemaText(schema))));
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
