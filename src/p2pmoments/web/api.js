// The one module that talks to the daemon's API (spec/openapi.yaml). The session
// cookie travels by itself; changes also carry the session's CSRF token.

export const API = '/api/v1';
let csrfToken = null;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function loggedOut() {
  window.dispatchEvent(new CustomEvent('p2pm:logged-out'));
}

async function errorOf(response) {
  let code = 'http';
  let message = `Something went wrong (error ${response.status}).`;
  try {
    const body = await response.json();
    code = body.error.code;
    message = body.error.message;
  } catch {
    // not our JSON: keep the generic message
  }
  if (response.status === 401) loggedOut();
  return new ApiError(response.status, code, message);
}

function headers(method, extra = {}) {
  const out = { ...extra };
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) out['X-CSRF-Token'] = csrfToken;
  return out;
}

export async function request(method, path, body) {
  const init = { method, credentials: 'same-origin', cache: 'no-store', headers: headers(method) };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch {
    throw new ApiError(0, 'offline', 'Moments on this computer does not answer. Is p2pmoments still running?');
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

const early = new Map(); // path -> the answer to a read started before its view asked

/** Start a read now (while the page is still setting up); the next get(path) takes it. */
export function prefetch(path) {
  const answer = request('GET', path);
  answer.catch(() => {}); // whoever takes it handles its failure
  early.set(path, answer);
}

export function get(path) {
  const answer = early.get(path);
  early.delete(path);
  return answer ?? request('GET', path);
}
export const post = (path, body) => request('POST', path, body ?? {});
export const patch = (path, body) => request('PATCH', path, body);
export const del = (path) => request('DELETE', path);

/** Who we are to the daemon; remembers the CSRF token for later changes. */
export async function startSession() {
  const session = await get('/session');
  csrfToken = session.csrf_token;
  return session;
}

/** POST (or PUT) an image (a camera frame, a photo of a code, a picture) as the body itself. */
export async function postImage(path, blob, method = 'POST') {
  let response;
  try {
    response = await fetch(API + path, {
      method,
      credentials: 'same-origin',
      headers: headers(method, { 'Content-Type': blob.type || 'image/jpeg' }),
      body: blob,
    });
  } catch {
    throw new ApiError(0, 'offline', 'Moments on this computer does not answer.');
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** POST multipart form data with upload progress (fetch cannot report it). */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', API + path);
    for (const [name, value] of Object.entries(headers('POST'))) xhr.setRequestHeader(name, value);
    xhr.responseType = 'json';
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener('load', () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(xhr.response);
        return;
      }
      const error = xhr.response?.error;
      if (xhr.status === 401) loggedOut();
      const message = error?.message
        ?? (xhr.status === 413 ? 'This is too large: a photo is at most 100 MiB, a file at most 1 TiB.'
          : `Something went wrong (error ${xhr.status}).`);
      reject(new ApiError(xhr.status, error?.code ?? 'http', message));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, 'offline',
      'The upload was cut off: Moments on this computer stopped answering.')));
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'aborted', 'The upload was cancelled.')));
    xhr.send(form);
  });
}

/**
 * How long to wait before trying again: 1 s, then twice as long each time, at most
 * 30 s; reset() after a success. Every retry in the app waits this way, so a daemon
 * that cannot answer is never asked hundreds of times a second.
 */
export class Backoff {
  constructor(first = 1000, most = 30000) {
    this.first = first;
    this.most = most;
    this.delay = first;
  }

  next() {
    const delay = this.delay;
    this.delay = Math.min(this.delay * 2, this.most);
    return delay;
  }

  reset() {
    this.delay = this.first;
  }
}

const q = encodeURIComponent;
export const urls = {
  thumbnail: (id, n) => `${API}/moments/${q(id)}/photos/${n}/thumbnail`,
  photo: (id, n) => `${API}/moments/${q(id)}/photos/${n}`,
  file: (id, n) => `${API}/moments/${q(id)}/files/${n}`,
};
export { q };
