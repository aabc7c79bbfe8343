// The client's entry: the shell (header, navigation, connection state), the hash router,
// and the session's start. Views live in views/ and export `render(root, route)`, which may
// return a cleanup function called when the view is left.

import { hasStoredSession, onSession, refresh, signOut, user } from './api.js';
import { live } from './socket.js';
import { avatar, clear, h, spinner, toast } from './ui.js';

const routes = [
  { pattern: /^\/$/, view: 'browse', title: 'Discover' },
  { pattern: /^\/login$/, view: 'auth', mode: 'login', title: 'Sign in', anonymous: true },
  { pattern: /^\/register$/, view: 'auth', mode: 'register', title: 'Create an account', anonymous: true },
  { pattern: /^\/forgot-password$/, view: 'auth', mode: 'forgot', title: 'Forgotten password', anonymous: true },
  { pattern: /^\/reset-password$/, view: 'auth', mode: 'reset', title: 'New password', anonymous: true },
  { pattern: /^\/restore$/, view: 'auth', mode: 'restore', title: 'Restore your account', anonymous: true },
  { pattern: /^\/verify-email$/, view: 'auth', mode: 'verify', title: 'Confirm your address' },
  { pattern: /^\/characters\/new$/, view: 'editor', title: 'New character', signedIn: true },
  { pattern: /^\/characters\/([0-9a-f-]{36})\/edit$/, view: 'editor', title: 'Edit character', signedIn: true },
  { pattern: /^\/characters\/([0-9a-f-]{36})$/, view: 'character', title: 'Character' },
  { pattern: /^\/chats$/, view: 'chat', title: 'Chats', signedIn: true },
  { pattern: /^\/chats\/([0-9a-f-]{36})$/, view: 'chat', title: 'Chat', signedIn: true },
  { pattern: /^\/profile$/, view: 'profile', title: 'Profile', signedIn: true },
  { pattern: /^\/admin$/, view: 'admin', title: 'Administration', signedIn: true },
];

const root = document.getElementById('app');
let view = null;
let cleanup = null;
let rendering = 0;

function parseHash() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, search = ''] = hash.split('?');
  return { path, query: new URLSearchParams(search) };
}

export function navigate(path) {
  if (location.hash !== `#${path}`) location.hash = path;
  else route();
}

let header = null;
// The connection's state, kept across header redraws.
const status = h('span.connection', { role: 'status', 'aria-live': 'polite' });
live.on('state', ({ state }) => {
  status.dataset.state = state;
  status.textContent = state === 'reconnecting' || state === 'connecting' && live.attempt > 0 ? 'Reconnecting…' : '';
});

function renderHeader() {
  const me = user();
  const link = (href, label) => h('a.nav-link', { href: `#${href}`, dataset: { path: href } }, label);
  const next = h(
    'header.topbar',
    h('a.brand', { href: '#/' }, h('span.brand-mark', { 'aria-hidden': 'true' }, '◐'), 'Companion'),
    h(
      'nav.nav',
      { 'aria-label': 'Main' },
      link('/', 'Discover'),
      me ? link('/chats', 'Chats') : null,
      me ? link('/characters/new', 'Create') : null,
      me && (me.role === 'admin' || me.role === 'moderator') ? link('/admin', me.role === 'admin' ? 'Admin' : 'Moderation') : null,
    ),
    status,
    me
      ? h(
          'div.account',
          h('a.account-link', { href: '#/profile', title: 'Your profile' }, avatar(me.avatarUrl, me.displayName, 'sm'), h('span.account-name', me.displayName)),
          h('button.ghost', { type: 'button', onclick: () => signOut().then(() => navigate('/login')) }, 'Sign out'),
        )
      : h('div.account', h('a.button.ghost', { href: '#/login' }, 'Sign in'), h('a.button.primary', { href: '#/register' }, 'Join')),
  );
  if (header) header.replaceWith(next);
  header = next;
}

function shell() {
  header = null;
  renderHeader();
  view = h('main#view.view', { tabindex: '-1' });
  clear(root, header, view);
}

function markNav(path) {
  for (const el of root.querySelectorAll('.nav-link')) {
    const target = el.dataset.path;
    const current = target === '/' ? path === '/' || path.startsWith('/characters/') && !path.endsWith('/new') : path.startsWith(target);
    if (current) el.setAttribute('aria-current', 'page');
    else el.removeAttribute('aria-current');
  }
}

async function route() {
  const ticket = ++rendering;
  const { path, query } = parseHash();
  const match = routes.map((r) => ({ r, m: r.pattern.exec(path) })).find((x) => x.m);
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  if (!match) {
    navigate('/');
    return;
  }
  const { r, m } = match;
  if (r.signedIn && !user()) {
    sessionStorage.setItem('companion.after', path);
    navigate('/login');
    return;
  }
  if (r.anonymous && user()) {
    navigate('/');
    return;
  }
  document.title = `${r.title} · Companion`;
  markNav(path);
  clear(view, spinner());
  try {
    const module = await import(`./views/${r.view}.js`);
    if (ticket !== rendering) return;
    clear(view);
    const done = await module.render(view, { params: m.slice(1), query, mode: r.mode, path });
    if (ticket !== rendering) {
      if (typeof done === 'function') done();
      return;
    }
    cleanup = typeof done === 'function' ? done : null;
  } catch (error) {
    console.warn(error);
    if (ticket === rendering) clear(view, h('div.error-box', { role: 'alert' }, h('p', 'This page could not be shown.')));
  }
}

/// After signing in: where the person was going, else the catalog.
export function afterSignIn() {
  const next = sessionStorage.getItem('companion.after');
  sessionStorage.removeItem('companion.after');
  navigate(next || '/');
}

let signedInAs = undefined;

onSession((me) => {
  const id = me ? me.id : null;
  const changed = id !== signedInAs;
  signedInAs = id;
  if (me) live.start();
  else live.stop();
  if (changed || !view) {
    shell();
    route();
  } else {
    renderHeader();
    markNav(parseHash().path);
  }
});

window.addEventListener('hashchange', route);

async function boot() {
  clear(root, spinner('Starting…'));
  if (hasStoredSession()) {
    try {
      await refresh();
      return; // onSession drew the page.
    } catch (error) {
      if (error.status !== 401 && error.status !== 403) toast('Could not restore your session; please sign in again.', 'error');
    }
  }
  signedInAs = null;
  shell();
  route();
}

boot();
