// The sidecar's public API as the console uses it: log-in over HTTP, everything else over
// the Socket.IO `request` API and its events. The token lives in sessionStorage (this tab
// only, gone when it closes), never in a URL.

const TOKEN_KEY = 'nestmtx.session';
const REQUEST_TIMEOUT_MS = 15000;

export class ApiError extends Error {
  constructor(message, code = 'error', details = []) {
    super(message);
    this.code = code;
    this.details = Array.isArray(details) ? details : [];
  }

  // The message plus the field each detail names, for a person to read.
  get text() {
    const fields = this.details
      .filter((d) => d && typeof d === 'object' && d.field)
      .map((d) => `${d.field}: ${d.message ?? d.error ?? ''}`.trim());
    return fields.length ? `${this.message} (${fields.join('; ')})` : this.message;
  }
}

function isErrorReply(reply) {
  return reply !== null && typeof reply === 'object' && !Array.isArray(reply) &&
    reply.error !== null && typeof reply.error === 'object' &&
    typeof reply.error.message === 'string';
}

async function errorFrom(response) {
  try {
    const body = await response.json();
    if (isErrorReply(body)) {
      return new ApiError(body.error.message, body.error.code, body.error.details);
    }
  } catch {
    // not JSON: fall through to the status line
  }
  return new ApiError(`The sidecar answered HTTP ${response.status}`, `http_${response.status}`);
}

export function savedSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(TOKEN_KEY) ?? 'null');
    return session && typeof session.bearer === 'string' ? session : null;
  } catch {
    return null;
  }
}

function forgetSession() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export async function logIn(username, password) {
  const response = await fetch('/api/auth', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password }),
    credentials: 'omit',
  });
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 429) {
      const wait = response.headers.get('Retry-After');
      if (wait) error.message += ` Try again in ${wait} s.`;
    }
    throw error;
  }
  const body = await response.json();
  const session = { bearer: body.bearer, user: body.user, expiration: body.expiration };
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify(session));
  return session;
}

// Revokes the token on the server; the local copy goes whatever the answer.
export async function logOut(session) {
  forgetSession();
  if (!session) return;
  try {
    await fetch('/api/auth', {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${session.bearer}` },
      credentials: 'omit',
    });
  } catch {
    // offline: the token still expires on its own
  }
}

export async function getJson(path, session) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${session.bearer}`, Accept: 'application/json' },
    credentials: 'omit',
  });
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

// A protected file (an event picture) as a blob: URL; an <img> cannot send the bearer.
export async function getBlobUrl(path, session) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${session.bearer}` },
    credentials: 'omit',
  });
  if (!response.ok) throw await errorFrom(response);
  return URL.createObjectURL(await response.blob());
}

// One authenticated Socket.IO connection; `request()` resolves with the reply or rejects
// with an ApiError. Event and log listeners are registered through `on()`.
export class Connection {
  constructor(session, { onState, onRefused }) {
    this._counter = 0;
    this.socket = window.io({
      auth: { token: session.bearer }, // never the query string: URLs end up in logs
      reconnectionDelayMax: 10000,
    });
    this.socket.on('connect', () => onState('connected'));
    this.socket.on('disconnect', (reason) => {
      // The server drops a revoked or expired token's sockets: that is a log-out.
      if (reason === 'io server disconnect') onRefused('Your session ended. Log in again.');
      else onState('reconnecting');
    });
    this.socket.on('connect_error', (error) => {
      if (this.socket.active) onState('reconnecting');
      else onRefused(error?.message || 'The sidecar refused the session. Log in again.');
    });
  }

  on(name, handler) {
    this.socket.on(name, handler);
  }

  request(module, command, { entity, payload } = {}) {
    this._counter += 1;
    const requestId = `console-${Date.now().toString(36)}-${this._counter}`;
    const message = { command, module, requestId };
    if (entity !== undefined) message.entity = entity;
    if (payload !== undefined) message.payload = payload;
    return new Promise((resolve, reject) => {
      this.socket.timeout(REQUEST_TIMEOUT_MS).emit('request', message, (timedOut, reply) => {
        if (timedOut) reject(new ApiError('The sidecar did not answer in time.', 'timeout'));
        else if (isErrorReply(reply)) {
          reject(new ApiError(reply.error.message, reply.error.code, reply.error.details));
        } else resolve(reply);
      });
    });
  }

  close() {
    this.socket.removeAllListeners();
    this.socket.disconnect();
  }
}
