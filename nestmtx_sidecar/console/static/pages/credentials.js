// Credentials: add, authorize with Google, see each one's state in words, delete.

import { byId, copyButton, el, formatTime, setText } from '../dom.js';

export const CALLBACK_PATH = '/api/oauth2/callback';

// What a person should know and do, by the reason of a `credentials:unauthenticated` event
// (or the stored error of a credential read before this page opened).
const REASONS = {
  invalid_grant: 'Google refused the refresh token (invalid_grant): it was revoked or has ' +
    'expired. If the OAuth consent screen of your Google Cloud project is in "Testing" ' +
    'status, Google expires refresh tokens after 7 days. To stop that, open Google Cloud ' +
    'console → APIs & Services → OAuth consent screen, and choose "Publish app" (status ' +
    '"In production"). Then press Authorize with Google again.',
  unreachable: "Google's token service cannot be reached and the access token has expired. " +
    'The sidecar keeps retrying on its own; cameras stream again once Google answers.',
};

// Device events over Pub/Sub, by the `pubsub.status` of a credential (its `message` wins).
const PUBSUB_WORDS = {
  pending: 'Setting up Pub/Sub…',
  waiting: 'Set up: waiting for the first event.',
  receiving: 'Receiving events.',
};
const DEVICE_EVENTS = new Set(['motion', 'person', 'sound', 'chime']);

// The one step the sidecar cannot do (entering the topic in the Device Access Console), with
// the topic to copy, and whether events arrive.
function deviceEvents(pubsub) {
  const kind = { receiving: 'ok', error: 'bad', no_events: 'bad' }[pubsub.status] ?? 'wait';
  const topic = pubsub.topic ? el('code', { className: 'topic' }, pubsub.topic) : null;
  return el('div', { className: 'pubsub' },
    el('p', { className: 'label' }, 'Device events'),
    el('p', { className: `state state-${kind}` },
      pubsub.message ?? PUBSUB_WORDS[pubsub.status] ?? pubsub.status),
    el('p', { className: 'muted' }, pubsub.last_event_at
      ? `Last event at ${formatTime(pubsub.last_event_at)}.` : 'No event has arrived yet.'),
    el('p', {}, pubsub.instruction),
    topic, topic ? copyButton('Copy topic', pubsub.topic, topic) : null);
}

function reasonOf(text) {
  if (!text) return null;
  if (text.includes('invalid_grant')) return 'invalid_grant';
  if (text.includes('unreachable')) return 'unreachable';
  return null;
}

export function stateWords(state) {
  if (state.authenticated) return { kind: 'ok', text: 'Authenticated with Google.' };
  const reason = state.reason ?? reasonOf(state.error);
  if (reason && REASONS[reason]) return { kind: 'bad', text: REASONS[reason] };
  if (state.error) return { kind: 'bad', text: state.error };
  if (state.hasRefreshToken) return { kind: 'wait', text: 'Connecting to Google…' };
  return { kind: 'wait', text: 'Not authorized yet: press Authorize with Google.' };
}

export class CredentialsPage {
  constructor({ connection }) {
    this.connection = connection;
    this.states = new Map(); // id -> {authenticated, error, reason, hasRefreshToken}
    this.items = [];
    const redirect = `${location.origin}${CALLBACK_PATH}`;
    setText(byId('redirect-uri'), redirect);
    byId('copy-redirect-uri').replaceWith(copyButton('Copy redirect URI', redirect,
      byId('redirect-uri')));
    const form = byId('credential-form');
    const toggle = byId('add-credential');
    toggle.addEventListener('click', () => this.openForm(form.hidden));
    byId('credential-cancel').addEventListener('click', () => this.openForm(false));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.create(form);
    });
  }

  openForm(open) {
    const form = byId('credential-form');
    form.hidden = !open;
    byId('add-credential').setAttribute('aria-expanded', String(open));
    if (open) byId('cred-description').focus();
    else form.reset();
  }

  async create(form) {
    const payload = {};
    for (const input of form.querySelectorAll('input')) {
      if (input.value.trim()) payload[input.name] = input.value.trim();
    }
    setText(byId('credential-form-error'), '');
    try {
      await this.connection.request('credentials', 'create', { payload });
      this.openForm(false);
      await this.show();
    } catch (error) {
      setText(byId('credential-form-error'), error.text ?? String(error));
    }
  }

  async show() {
    try {
      const page = await this.connection.request('credentials', 'list',
        { payload: { itemsPerPage: -1 } });
      this.items = page.items;
      for (const item of this.items) {
        this.states.set(item.id, {
          authenticated: item.authenticated, error: item.auth_error, reason: null,
          hasRefreshToken: item.has_refresh_token,
        });
      }
      setText(byId('credentials-error'), '');
      this.render();
    } catch (error) {
      setText(byId('credentials-error'), error.text ?? String(error));
    }
  }

  onEvent(event) {
    if (event.domain === 'camera' && DEVICE_EVENTS.has(event.event)) {
      // The first event a credential brings changes what its row says: list them again.
      if (this.items.some((item) => item.pubsub && item.pubsub.status !== 'receiving')) {
        this.show();
      }
      return;
    }
    if (event.domain !== 'credentials') return;
    if (!this.items.some((item) => item.id === event.entity)) {
      this.show(); // added elsewhere (another tab, the API): the list carries its state
      return;
    }
    const state = this.states.get(event.entity) ?? {};
    if (event.event === 'unauthenticated') {
      Object.assign(state, { authenticated: false, error: event.details?.error ?? null,
        reason: event.details?.reason ?? null });
    } else {
      Object.assign(state, { authenticated: true, error: null, reason: null });
    }
    this.states.set(event.entity, state);
    this.render();
  }

  async authorize(item, button, status) {
    button.disabled = true;
    setText(status, 'Opening Google…');
    try {
      const url = await this.connection.request('credentials', 'update',
        { entity: item.id, payload: { origin: location.origin } });
      const target = new URL(url);
      if (target.protocol !== 'https:' && target.protocol !== 'http:') {
        throw new Error('The consent URL is not a web address.');
      }
      // Same tab: Google sends the browser back to the callback, which leads to this page.
      location.assign(target.href);
    } catch (error) {
      setText(status, error.text ?? error.message);
      button.disabled = false;
    }
  }

  async remove(item, status) {
    if (!window.confirm(`Delete credential "${item.description}"?`)) return;
    try {
      await this.connection.request('credentials', 'delete', { entity: item.id });
      this.states.delete(item.id);
      await this.show();
    } catch (error) {
      setText(status, error.text ?? error.message);
    }
  }

  render() {
    const body = byId('credentials-table').tBodies[0];
    byId('credentials-empty').hidden = this.items.length > 0;
    byId('credentials-table').hidden = !this.items.length;
    body.replaceChildren(...this.items.map((item) => {
      const words = stateWords(this.states.get(item.id) ?? {});
      const status = el('p', { className: 'row-status', role: 'status' });
      const authorize = el('button', { type: 'button' }, 'Authorize with Google');
      authorize.addEventListener('click', () => this.authorize(item, authorize, status));
      const remove = el('button', { type: 'button', className: 'danger',
        'aria-label': `Delete ${item.description}`,
        onclick: () => this.remove(item, status) }, 'Delete');
      return el('tr', { role: 'row' },
        el('td', { role: 'cell', 'data-label': 'Credential' },
          el('strong', {}, item.description),
          el('div', { className: 'muted' }, `Device Access project ${item.dac_project_id}`),
          el('div', { className: 'muted' }, `Client ${item.oauth_client_id}`)),
        el('td', { role: 'cell', 'data-label': 'Status' },
          el('p', { className: `state state-${words.kind}` }, words.text),
          item.pubsub ? deviceEvents(item.pubsub) : null),
        el('td', { role: 'cell', 'data-label': 'Actions' },
          el('div', { className: 'actions' }, authorize, remove), status));
    }));
  }
}
