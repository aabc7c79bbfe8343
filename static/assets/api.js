// The API client: JSON over fetch, the error envelope turned into ApiError, and the session.
//
// Tokens. The access token (15 minutes) lives only in this module's memory. The refresh
// token is what keeps someone signed in across reloads, so it is kept in localStorage; the
// server's Content-Security-Policy allows no inline or foreign script, which is what would
// otherwise read it. Refresh tokens rotate on every use and a reused one ends the whole
// session, so two tabs must never refresh with the same token: every refresh runs under a
// Web Lock shared by the tabs and reads the stored token inside it.

const REFRESH_KEY = 'companion.refreshToken';
const BASE = '/api/v1';

export class ApiError extends Error {
  constructor(status, code, message, details = {}, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
    this.retryAfter = retryAfter;
  }

  /// Field messages of a 422, by field name.
  get fields() {
    return this.details.fields || {};
  }
}

const NETWORK = 'NETWORK_ERROR';

let access = null; // { token, expiresAt (ms) }
let currentUser = null;
let refreshTimer = null;
const listeners = new Set();

function notify() {
  for (const listener of listeners) listener(currentUser);
}

/// Calls `listener(user)` whenever the signed-in user changes (null when signed out).
export function onSession(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function user() {
  return currentUser;
}

export function setUser(next) {
  currentUser = next;
  notify();
}

export function hasStoredSession() {
  return Boolean(localStorage.getItem(REFRESH_KEY));
}

function accept(body) {
  access = { token: body.token, expiresAt: Date.now() + body.expiresIn * 1000 };
  localStorage.setItem(REFRESH_KEY, body.refreshToken);
  clearTimeout(refreshTimer);
  // Renew a minute before expiry, so sockets and requests never meet an expired token.
  const wait = Math.max(5_000, body.expiresIn * 1000 - 60_000);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), wait);
  setUser(body.user);
}

function forget() {
  access = null;
  clearTimeout(refreshTimer);
  localStorage.removeItem(REFRESH_KEY);
  setUser(null);
}

// Another tab signed out (or in): follow it.
window.addEventListener('storage', (event) => {
  if (event.key !== REFRESH_KEY) return;
  if (!event.newValue && currentUser) {
    access = null;
    clearTimeout(refreshTimer);
    setUser(null);
  } else if (event.newValue && !currentUser) {
    refresh().catch(() => {});
  }
});

async function withLock(fn) {
  if (navigator.locks) return navigator.locks.request('companion.refresh', fn);
  return fn();
}

let refreshing = null;

/// Trades the stored refresh token for a new pair. Signs out when the server refuses it.
export function refresh() {
  if (!refreshing) {
    refreshing = withLock(async () => {
      const stored = localStorage.getItem(REFRESH_KEY);
      if (!stored) {
        forget();
        throw new ApiError(401, 'UNAUTHORIZED', 'You are signed out.');
      }
      try {
        const body = await request('POST', '/auth/refresh', { body: { refreshToken: stored }, auth: false });
        accept(body);
        return access.token;
      } catch (error) {
        if (error.status === 401 || error.status === 403) forget();
        throw error;
      }
    }).finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/// A valid access token, renewed first when it is about to expire; null when signed out.
export async function token() {
  if (access && access.expiresAt - Date.now() > 30_000) return access.token;
  if (!hasStoredSession()) return null;
  return refresh();
}

export async function signIn(path, body) {
  accept(await request('POST', path, { body, auth: false }));
  return currentUser;
}

/// Signs out here, and on the server unless it ended the session itself (`remote` false: the
/// account was just closed).
export async function signOut(remote = true) {
  try {
    if (access && remote) await request('POST', '/auth/logout', { retry: false });
  } catch {
    // Signed out here whatever the server says.
  }
  forget();
}

/// The session ended elsewhere (the server closed the socket, a password change): try the
/// refresh token once, else sign out.
export async function sessionLost() {
  access = null;
  try {
    await refresh();
  } catch {
    forget();
  }
}

function retryAfterSeconds(response) {
  const header = response.headers.get('Retry-After') || response.headers.get('X-RateLimit-Reset');
  const seconds = Number(header);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

async function failure(response) {
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    // Not JSON (a proxy's page): described by the status below.
  }
  const error = envelope && envelope.error;
  return new ApiError(
    response.status,
    error ? error.code : `HTTP_${response.status}`,
    error ? error.message : `The server answered ${response.status}.`,
    error ? error.details : {},
    retryAfterSeconds(response),
  );
}

/// One API call. `body` is sent as JSON unless it is FormData or a Blob; the answer is the
/// parsed JSON (null for 204), or the Response itself with `raw`.
export async function request(method, path, options = {}) {
  const { body, auth = true, raw = false, retry = true, headers = {}, signal } = options;
  const init = { method, headers: { ...headers }, signal };
  if (body instanceof FormData || body instanceof Blob) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  if (auth) {
    const bearer = await token();
    if (bearer) init.headers.Authorization = `Bearer ${bearer}`;
  }
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, NETWORK, 'The server cannot be reached. Check your connection and try again.');
  }
  if (response.status === 401 && auth && retry && hasStoredSession()) {
    access = null;
    await refresh();
    return request(method, path, { ...options, retry: false });
  }
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get('Content-Type') || '';
  return type.includes('json') ? response.json() : response.text();
}

export const get = (path, options) => request('GET', path, options);
export const post = (path, body, options) => request('POST', path, { ...options, body });
export const put = (path, body, options) => request('PUT', path, { ...options, body });
export const patch = (path, body, options) => request('PATCH', path, { ...options, body });
export const del = (path, body, options) => request('DELETE', path, { ...options, body });

/// A media URL that needs the bearer token (private files): fetched and turned into an
/// object URL. Public URLs are returned as they are.
export async function mediaUrl(url) {
  if (!url) return null;
  const response = await request('GET', url.replace(/^\/api\/v1/, ''), { raw: true });
  return URL.createObjectURL(await response.blob());
}

/// Words for an error, for people: the server's message, plus when to retry.
export function describe(error) {
  if (!(error instanceof ApiError)) return 'Something went wrong. Please try again.';
  // The message says when the month's tokens renew.
  if (error.code === 'TOKEN_QUOTA_EXCEEDED') return error.message;
  if (error.status === 429 && error.retryAfter !== null) {
    return `${error.message} You can try again in ${humanSeconds(error.retryAfter)}.`;
  }
  return error.message;
}

export function humanSeconds(seconds) {
  if (seconds < 60) return `${Math.max(1, Math.ceil(seconds))} s`;
  if (seconds < 3600) return `${Math.ceil(seconds / 60)} min`;
  return `${Math.ceil(seconds / 3600)} h`;
}
