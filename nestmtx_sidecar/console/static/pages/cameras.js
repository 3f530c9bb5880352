// Cameras: every discovered camera, its MediaMTX path settings, live state from `camera:*`
// events, the URLs readers use, and an optional preview through MediaMTX's WebRTC page.

import { byId, copyButton, el, formatTime, labelled, setText } from '../dom.js';

// After an authorization, device sync lists the new cameras within a few seconds.
const DISCOVERY_POLLS = 10;
const DISCOVERY_POLL_MS = 1000;
// MediaMTX's default ports, for bases the settings leave empty.
const DEFAULT_BASES = {
  rtsp_url: () => `rtsp://${location.hostname}:8554`,
  webrtc_url: () => `${location.protocol}//${location.hostname}:8889`,
  hls_url: () => `${location.protocol}//${location.hostname}:8888`,
};

const PROTOCOL_NAMES = { RTSP: 'RTSP', WEB_RTC: 'WebRTC' };

function protocols(camera) {
  const names = (camera.protocols ?? []).map((p) => PROTOCOL_NAMES[p] ?? p);
  return names.length ? names.join(' / ') : 'no live stream';
}

function resolution(camera) {
  const r = camera.resolution;
  return r && r.width && r.height ? `${r.width}×${r.height}` : 'resolution unknown';
}

function freshState() {
  return { demanded: null, ready: null, readers: new Set(), expiresAt: null, generation: null,
    failure: null, error: null, device: null };
}

export class CamerasPage {
  constructor({ connection, pictures }) {
    this.connection = connection;
    this.pictures = pictures;
    this.cameras = [];
    this.states = new Map(); // camera id -> live state from events since the page opened
    this.urls = null;
    this.polling = null;
    byId('cameras-refresh').addEventListener('click', () => this.show());
  }

  async show() {
    try {
      this.urls ??= await this.connection.request('console', 'list');
      const page = await this.connection.request('cameras', 'list',
        { payload: { itemsPerPage: -1, sortBy: 'name' } });
      this.cameras = page.items;
      setText(byId('cameras-error'), '');
      this.render();
      if (!this.cameras.length) this.watchForCameras();
    } catch (error) {
      setText(byId('cameras-error'), error.text ?? String(error));
    }
  }

  // Device sync publishes no event of its own: look again for a bounded while.
  watchForCameras() {
    if (this.polling) return;
    let left = DISCOVERY_POLLS;
    this.polling = setInterval(async () => {
      left -= 1;
      if (left <= 0 || this.cameras.length || byId('page-cameras').hidden) {
        clearInterval(this.polling);
        this.polling = null;
      }
      if (!this.cameras.length && !byId('page-cameras').hidden) await this.show();
    }, DISCOVERY_POLL_MS);
  }

  onEvent(event) {
    if (event.domain === 'credentials' && event.event === 'authenticated') {
      this.watchForCameras();
      return;
    }
    if (event.domain !== 'camera' || event.entity === null) return;
    const state = this.states.get(event.entity) ?? freshState();
    const details = event.details ?? {};
    switch (event.event) {
      case 'demand': state.demanded = true; break;
      case 'unDemand': state.demanded = false; break;
      case 'ready': state.ready = true; break;
      case 'notReady': state.ready = false; state.readers.clear(); break;
      case 'read': state.readers.add(details.readerId ?? event.at); break;
      case 'unread': state.readers.delete(details.readerId); break;
      case 'extended':
        state.expiresAt = details.expiresAt ?? null;
        state.generation = details.generation ?? state.generation;
        break;
      case 'failed-extension':
        state.failure = { at: event.at, error: details.error, reason: details.reason };
        break;
      case 'error': state.error = { at: event.at, error: details.error }; break;
      case 'motion': case 'person': case 'sound': case 'chime':
        state.device = { kind: event.event, at: event.at, image: details.image };
        break;
      default: return;
    }
    this.states.set(event.entity, state);
    const row = byId(`camera-state-${event.entity}`);
    if (row) row.replaceWith(this.stateCell(event.entity));
  }

  base(key) {
    return (this.urls?.[key] || DEFAULT_BASES[key]()).replace(/\/+$/, '');
  }

  streamUrls(path) {
    const encoded = path.split('/').map(encodeURIComponent).join('/');
    return [
      ['RTSP', `${this.base('rtsp_url')}/${encoded}`],
      ['WebRTC', `${this.base('webrtc_url')}/${encoded}`],
      ['HLS', `${this.base('hls_url')}/${encoded}/index.m3u8`],
    ];
  }

  stateCell(id) {
    const state = this.states.get(id);
    const cell = el('td', { role: 'cell', 'data-label': 'Live state', id: `camera-state-${id}` });
    if (!state) {
      cell.append(el('span', { className: 'muted' }, 'No events since this page opened.'));
      return cell;
    }
    const yesNo = (value) => (value === null ? 'unknown' : value ? 'yes' : 'no');
    const facts = [
      ['Demanded', yesNo(state.demanded)],
      ['Ready', yesNo(state.ready)],
      ['Readers', String(state.readers.size)],
    ];
    if (state.expiresAt) facts.push(['Stream expires', formatTime(state.expiresAt)]);
    if (state.generation !== null) facts.push(['Stream generation', String(state.generation)]);
    cell.append(el('dl', { className: 'facts compact' },
      facts.map(([term, value]) => [el('dt', {}, term), el('dd', {}, value)])));
    if (state.failure) {
      cell.append(el('p', { className: 'state state-bad' },
        `Last failed extension (${formatTime(state.failure.at)}): ${state.failure.reason ?? ''}` +
        ` — ${state.failure.error ?? ''}`));
    }
    if (state.error) {
      cell.append(el('p', { className: 'state state-bad' },
        `Error (${formatTime(state.error.at)}): ${state.error.error ?? ''}`));
    }
    if (state.device) {
      const { kind, at, image } = state.device;
      cell.append(el('p', { className: 'state' }, `Last event: ${kind} (${formatTime(at)})`));
      if (typeof image === 'string' && image.startsWith('/api/cameras/')) {
        const name = this.cameras.find((c) => c.id === id)?.name ?? `Camera ${id}`;
        cell.append(this.pictures.image(image, `${name}: last event, ${kind}`));
      }
    }
    return cell;
  }

  async save(camera, fields, status) {
    const payload = { mtx_path: fields.path.value.trim() || null,
      is_enabled: fields.enabled.checked, is_persistent: fields.persistent.checked };
    setText(status, 'Saving…');
    try {
      const saved = await this.connection.request('cameras', 'update',
        { entity: camera.id, payload });
      Object.assign(camera, saved);
      this.render();
      setText(byId(`camera-status-${camera.id}`), 'Saved.');
    } catch (error) {
      setText(status, error.text ?? error.message);
    }
  }

  previewButton(camera, container) {
    if (!this.urls?.preview_url || !camera.mtx_path) return null;
    const button = el('button', { type: 'button', 'aria-expanded': 'false' }, 'Preview');
    button.addEventListener('click', () => {
      const open = button.getAttribute('aria-expanded') !== 'true';
      button.setAttribute('aria-expanded', String(open));
      container.replaceChildren(...(open ? [el('iframe', {
        title: `Live preview of ${camera.name}`, className: 'preview',
        src: `${this.urls.preview_url}/${camera.mtx_path.split('/').map(encodeURIComponent)
          .join('/')}`,
        allow: 'autoplay; fullscreen', referrerpolicy: 'no-referrer' })] : []));
    });
    return button;
  }

  render() {
    byId('cameras-empty').hidden = this.cameras.length > 0;
    byId('cameras-table').hidden = !this.cameras.length;
    byId('cameras-table').tBodies[0].replaceChildren(...this.cameras.map((camera) => {
      const fields = {
        path: el('input', { value: camera.mtx_path ?? '', maxlength: 255, autocomplete: 'off',
          spellcheck: 'false', placeholder: 'e.g. front-door' }),
        enabled: el('input', { type: 'checkbox', checked: camera.is_enabled }),
        persistent: el('input', { type: 'checkbox', checked: camera.is_persistent }),
      };
      const status = el('p', { className: 'row-status', role: 'status',
        id: `camera-status-${camera.id}` });
      const form = el('form', { className: 'camera-form',
        'aria-label': `Settings of ${camera.name}` },
        el('div', { className: 'field' }, labelled('Path', fields.path)),
        el('div', { className: 'checks' },
          el('span', {}, labelled('Enabled', fields.enabled).reverse()),
          el('span', {}, labelled('Persistent', fields.persistent).reverse())),
        el('button', { type: 'submit' }, 'Save'), status);
      form.addEventListener('submit', (event) => {
        event.preventDefault();
        this.save(camera, fields, status);
      });
      const preview = el('div', { className: 'preview-box' });
      const urls = camera.mtx_path ? el('ul', { className: 'urls' },
        this.streamUrls(camera.mtx_path).map(([kind, url]) => {
          const shown = el('code', {}, url);
          return el('li', {}, el('span', { className: 'kind' }, kind), shown,
            copyButton(`Copy ${kind} URL`, url, shown));
        })) :
        el('p', { className: 'muted' }, 'Set a path to get stream URLs.');
      return el('tr', { role: 'row' },
        el('td', { role: 'cell', 'data-label': 'Camera' },
          el('strong', { className: 'camera-name' }, camera.name),
          el('div', { className: 'muted' }, camera.room || 'no room'),
          el('div', { className: 'muted' },
            `${protocols(camera)} · ${resolution(camera)}`),
          camera.is_missing ? el('p', { className: 'state state-bad' },
            'Google no longer lists this camera.') : null),
        this.stateCell(camera.id),
        el('td', { role: 'cell', 'data-label': 'Settings' }, form),
        el('td', { role: 'cell', 'data-label': 'Stream URLs' }, urls,
          this.previewButton(camera, preview), preview));
    }));
  }
}
