// Logs: the live `log` feed with NestMTX's level numbers, a level filter, search and pause.

import { byId, el, formatTime } from '../dom.js';
import { LiveFeed } from './feed.js';

const KEPT = 1000;
export const LEVELS = { 20: 'trace', 30: 'debug', 40: 'info', 50: 'warn', 60: 'error',
  70: 'fatal' };

function key(entry) {
  return `${entry.time}|${entry.pid}|${entry.level}|${entry.msg}`;
}

export class LogsPage extends LiveFeed {
  constructor() {
    super('logs', KEPT, 'line(s)');
    this.seen = new Set(); // the server replays its last 100 lines on every (re)connect
    byId('logs-level').addEventListener('input', () => this.render());
    byId('logs-search').addEventListener('input', () => this.render());
  }

  onLog(entry) {
    if (!entry || typeof entry !== 'object') return;
    const id = key(entry);
    if (this.seen.has(id)) return;
    this.seen.add(id);
    if (this.seen.size > KEPT * 2) this.seen = new Set(this.entries.items.map(key));
    this.add(entry);
  }

  matches(entry) {
    const minimum = Number(byId('logs-level').value);
    const search = byId('logs-search').value.trim().toLowerCase();
    return Number(entry.level) >= minimum &&
      (!search || `${entry.msg} ${entry.service}`.toLowerCase().includes(search));
  }

  item(entry) {
    const level = LEVELS[entry.level] ?? String(entry.level);
    return el('li', { className: `log level-${level}` },
      el('time', { datetime: entry.timestamp }, formatTime(entry.timestamp)),
      el('span', { className: 'level' }, level),
      el('span', { className: 'service muted' }, entry.service),
      el('span', { className: 'msg' }, entry.msg));
  }
}
