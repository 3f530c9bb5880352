// Status: `health list` (checks, uptime, and for logged-in users this replica's sockets,
// lease and MediaMTX) plus `version list`.

import { byId, el, formatDuration, setText } from '../dom.js';

function lease(info) {
  if (!info) return 'unknown';
  const where = info.held_here ? 'held by this replica' : 'held by another replica';
  return `${info.name}: ${where} (replica ${info.replica})`;
}

export class StatusPage {
  constructor({ connection }) {
    this.connection = connection;
    byId('status-refresh').addEventListener('click', () => this.show());
  }

  async show() {
    try {
      const [health, version] = await Promise.all([
        this.connection.request('health', 'list'),
        this.connection.request('version', 'list'),
      ]);
      const facts = [
        ['Status', health.status === 'ok' ? 'ok: every check passes' : `${health.status}`],
        ...Object.entries(health.checks ?? {}).map(([name, result]) => [`Check: ${name}`,
          result]),
        ['Version', `${version.name} ${version.version}`],
        ['Uptime', formatDuration(health.uptime)],
        ['Connected sockets', String(health.connected_sockets ?? 'unknown')],
        ['Lease', lease(health.lease)],
        ['MediaMTX API', health.mediamtx ?? 'unknown'],
      ];
      byId('status-list').replaceChildren(...facts.flatMap(([term, value]) => [
        el('dt', {}, term), el('dd', {}, value)]));
      setText(byId('status-error'), '');
    } catch (error) {
      setText(byId('status-error'), error.text ?? error.message);
    }
  }
}
