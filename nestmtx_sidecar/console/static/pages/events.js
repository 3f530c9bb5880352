// Events: the live `nestmtx:*` feed, filterable by domain, event and camera, pausable.
// Device events show their picture.

import { byId, el, formatTime } from '../dom.js';
import { LiveFeed } from './feed.js';

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

export class EventsPage extends LiveFeed {
  constructor({ pictures }) {
    super('events', KEPT, 'event(s)');
    this.pictures = pictures;
    for (const id of ['events-domain', 'events-event', 'events-camera']) {
      byId(id).addEventListener('input', () => this.render());
    }
    byId('events-clear').addEventListener('click', () => {
      this.entries.clear();
      this.render();
    });
  }

  onEvent(event) {
    this.add(event);
  }

  matches(event) {
    return matches(event, {
      domain: byId('events-domain').value,
      name: byId('events-event').value.trim().toLowerCase(),
      camera: byId('events-camera').value.trim().toLowerCase(),
    });
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
