// Events: the live `nestmtx:*` feed, filterable by domain, event and camera, pausable.
// Device events show their picture.

import { byId, el, formatTime, Ring, setText } from '../dom.js';

const KEPT = 500;

function matches(event, { domain, name, camera }) {
  if (domain && event.domain !== domain) return false;
  if (name && !String(event.event).toLowerCase().includes(name)) return false;
  if (camera) {
    const details = event.details ?? {};
    const haystack = [details.path, details.name, event.entity].map((v) => String(v ?? ''))
      .join(' ').toLowerCase();
    if (!haystack.includes(camera)) return false;
  }
  return true;
}

export class EventsPage {
  constructor({ pictures }) {
    this.pictures = pictures;
    this.events = new Ring(KEPT);
    this.paused = false;
    this.missed = 0;
    for (const id of ['events-domain', 'events-event', 'events-camera']) {
      byId(id).addEventListener('input', () => this.render());
    }
    byId('events-filter').addEventListener('submit', (event) => event.preventDefault());
    byId('events-pause').addEventListener('click', () => this.togglePause());
    byId('events-clear').addEventListener('click', () => {
      this.events.clear();
      this.render();
    });
  }

  show() {
    this.render();
  }

  togglePause() {
    this.paused = !this.paused;
    const button = byId('events-pause');
    button.setAttribute('aria-pressed', String(this.paused));
    setText(button, this.paused ? 'Resume' : 'Pause');
    if (!this.paused) {
      this.missed = 0;
      this.render();
    }
    this.renderPaused();
  }

  renderPaused() {
    const note = byId('events-paused');
    note.hidden = !this.paused;
    setText(note, `Paused: ${this.missed} new event(s) held back.`);
  }

  onEvent(event) {
    this.events.push(event);
    if (this.paused) {
      this.missed += 1;
      this.renderPaused();
    } else if (matches(event, this.filters())) {
      const list = byId('events-list');
      list.prepend(this.item(event));
      while (list.childElementCount > KEPT) list.lastElementChild.remove();
    }
  }

  filters() {
    return {
      domain: byId('events-domain').value,
      name: byId('events-event').value.trim().toLowerCase(),
      camera: byId('events-camera').value.trim().toLowerCase(),
    };
  }

  render() {
    if (this.paused) return;
    const filters = this.filters();
    const shown = this.events.items.filter((e) => matches(e, filters)).reverse();
    byId('events-list').replaceChildren(...shown.map((event) => this.item(event)));
  }

  item(event) {
    const details = event.details ?? {};
    const extra = Object.entries(details)
      .filter(([key]) => !['path', 'name', 'query', 'enabled', 'description', 'image']
        .includes(key))
      .map(([key, value]) => `${key}: ${typeof value === 'object' ? JSON.stringify(value) : value}`);
    return el('li', { className: `event event-${event.domain}` },
      el('time', { datetime: event.at }, formatTime(event.at)),
      el('span', { className: 'topic' }, `${event.domain}:${event.event}`),
      details.path ? el('code', { className: 'path' }, details.path) : null,
      details.name ? el('span', { className: 'name' }, details.name) : null,
      details.description ? el('span', { className: 'name' }, details.description) : null,
      extra.length ? el('span', { className: 'muted details' }, extra.join(' · ')) : null,
      typeof details.image === 'string' && details.image.startsWith('/api/cameras/')
        ? this.pictures.image(details.image, `${details.name ?? 'Camera'}: ${event.event}`)
        : null);
  }
}
