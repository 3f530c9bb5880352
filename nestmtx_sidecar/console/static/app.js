// The console: log-in, then one page per hash (#cameras, #credentials, ...), all fed by one
// Socket.IO connection. Plain ES modules and DOM APIs: nothing to build, nothing to fetch.

import { Connection, logIn, logOut, savedSession } from './api.js';
import { byId, setText } from './dom.js';
import { ApiPage } from './pages/api.js';
import { CamerasPage } from './pages/cameras.js';
import { CredentialsPage } from './pages/credentials.js';
import { EventsPage } from './pages/events.js';
import { LogsPage } from './pages/logs.js';
import { StatusPage } from './pages/status.js';
import { UsersPage } from './pages/users.js';
import { Pictures } from './pictures.js';

const FLASH_KEY = 'nestmtx.flash';
const PAGES = {
  cameras: CamerasPage,
  credentials: CredentialsPage,
  events: EventsPage,
  logs: LogsPage,
  users: UsersPage,
  status: StatusPage,
  api: ApiPage,
};
const CONNECTION_TEXT = {
  connecting: 'Connecting to the sidecar…',
  reconnecting: 'Connection to the sidecar lost; reconnecting…',
};

let session = null;
let connection = null;
let pages = {};
let current = null;

// Leaving the session reloads the page: every rendered value is gone with the old DOM.
async function end(message) {
  const ending = session;
  session = null;
  if (message) sessionStorage.setItem(FLASH_KEY, message);
  connection?.close();
  await logOut(ending);
  location.reload();
}

function setConnection(state) {
  const banner = byId('connection');
  banner.hidden = state === 'connected';
  setText(banner, CONNECTION_TEXT[state] ?? '');
  if (state === 'connected') current?.show();
}

function route() {
  if (!session) return;
  const wanted = location.hash.slice(1);
  const name = wanted in PAGES ? wanted : 'cameras';
  for (const key of Object.keys(PAGES)) byId(`page-${key}`).hidden = key !== name;
  for (const link of byId('nav').querySelectorAll('a')) {
    if (link.getAttribute('href') === `#${name}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const changed = current !== pages[name];
  current = pages[name];
  if (connection.socket.connected) current.show();
  if (changed && wanted) byId(`${name}-title`).focus();
}

function start(newSession) {
  session = newSession;
  byId('login').hidden = true;
  byId('nav').hidden = false;
  setText(byId('whoami'), `Logged in as ${session.user?.username ?? ''}`);
  setConnection('connecting');
  connection = new Connection(session, {
    onState: setConnection,
    onRefused: (message) => end(message),
  });
  const context = { connection, session, pictures: new Pictures(session),
    go: (name) => { location.hash = name; } };
  pages = Object.fromEntries(Object.entries(PAGES).map(([name, Page]) => [name,
    new Page(context)]));
  connection.on('nestmtx:*', (event) => {
    for (const page of Object.values(pages)) page.onEvent?.(event);
  });
  connection.on('log', (entry) => pages.logs.onLog(entry));
  for (const heading of document.querySelectorAll('.page h1')) heading.tabIndex = -1;
  route();
}

function showLogin() {
  const flash = sessionStorage.getItem(FLASH_KEY);
  sessionStorage.removeItem(FLASH_KEY);
  setText(byId('login-error'), flash ?? '');
  byId('login').hidden = false;
  byId('login-username').focus();
}

function init() {
  byId('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    setText(byId('login-error'), '');
    try {
      const newSession = await logIn(byId('login-username').value, byId('login-password').value);
      form.reset();
      start(newSession);
    } catch (error) {
      setText(byId('login-error'), error.message || 'Log-in failed.');
      byId('login-password').select();
    } finally {
      button.disabled = false;
    }
  });
  byId('logout').addEventListener('click', () => end());
  window.addEventListener('hashchange', route);
  const saved = savedSession();
  if (saved) start(saved);
  else showLogin();
}

init();
