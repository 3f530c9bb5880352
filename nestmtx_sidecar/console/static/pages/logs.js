// Logs: the live `log` feed with NestMTX's level numbers, a level filter, search and pause.

import { byId, el, formatTime, Ring, setText } from '../dom.js';

const KEPT = 1000;
export const LEVELS = { 20: 'trace', 30: 'debug', 40: 'info', 50: 'warn', 60: 'error',
  70: 'fatal' };

function key(entry) {
  return `${entry.time}|${entry.pid}|${entry.level}|${entry.msg}`;
}

export class LogsPage {
  constructor() {
    this.entries = new Ring(KEPT);
    this.seen = new Set(); // the server replays its last 100 lines on every (re)connect
    this.paused = false;
    this.missed = 0;
    byId('logs-level').addEventListener('input', () => this.render());
    byId('logs-search').addEventListener('input', () => this.render());
    byId('logs-filter').addEventListener('submit', (event) => event.preventDefault());
    byId('logs-pause').addEventListener('click', () => this.togglePause());
  }

  show() {
    this.render();
  }

  togglePause() {
    this.paused = !this.paused;
    const button = byId('logs-pause');
    button.setAttribute('aria-pressed', String(this.paused));
    setText(button, this.paused ? 'Resume' : 'Pause');
    if (!this.paused) {
      this.missed = 0;
      this.render();
    }
    this.renderPaused();
  }

  renderPaused() {
    const note = byId('logs-paused');
    note.hidden = !this.paused;
    setText(note, `Paused: ${this.missed} new line(s) held back.`);
  }

  onLog(entry) {
    if (!entry || typeof entry !== 'object') return;
    const id = key(entry);
    if (this.seen.has(id)) return;
    this.seen.add(id);
    this.entries.push(entry);
    if (this.seen.size > KEPT * 2) this.seen = new Set(this.entries.items.map(key));
    if (this.paused) {
      this.missed += 1;
      this.renderPaused();
    } else if (this.matches(entry)) {
      const list = byId('logs-list');
      list.prepend(this.item(entry));
      while (list.childElementCount > KEPT) list.lastElementChild.remove();
    }
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

  render() {
    if (this.paused) return;
    const shown = this.entries.items.filter((entry) => this.matches(entry)).reverse();
    byId('logs-list').replaceChildren(...shown.map((entry) => this.item(entry)));
  }
}
