// Live updates: the daemon's events as Server-Sent Events (GET /api/v1/events/stream).
// EventSource reconnects by itself and resumes from the last id it saw; if events
// were lost (too far behind, or the daemon restarted) the daemon says `gap`, and
// every view re-reads what it shows. A stream the daemon refuses (429: too many pages
// open) is said so (`paused`, with when the next try comes) and tried again, more and
// more slowly.

const listeners = new Map(); // kind ('*' for all, 'gap', 'online', 'offline', 'paused') -> Set(fn)
let source = null;
let retryTimer = null;
let retryDelay = 1000;
let online = false;

export function on(kind, fn) {
  if (!listeners.has(kind)) listeners.set(kind, new Set());
  listeners.get(kind).add(fn);
  return () => listeners.get(kind)?.delete(fn);
}

function emit(kind, data) {
  for (const key of [kind, '*']) {
    for (const fn of listeners.get(key) ?? []) {
      try {
        fn(data, kind);
      } catch (error) {
        console.error('a live update failed', error);
      }
    }
  }
}

function setOnline(value) {
  if (value === online) return;
  online = value;
  emit(value ? 'online' : 'offline', {});
}

export function isOnline() {
  return online;
}

let everConnected = false;

export function connect() {
  clearTimeout(retryTimer);
  source?.close();
  const mine = new EventSource('/api/v1/events/stream');
  source = mine;
  let greeted = false;
  mine.addEventListener('hello', () => {
    retryDelay = 1000;
    setOnline(true);
    // The browser's own reconnections resume where they left off (Last-Event-ID) and
    // the daemon says `gap` if it cannot; a new stream after a lost one cannot know.
    if (!greeted && everConnected) emit('gap', {});
    greeted = true;
    everConnected = true;
  });
  mine.addEventListener('gap', () => {
    retryDelay = 1000;
    setOnline(true);
    greeted = true;
    everConnected = true;
    emit('gap', {});
  });
  mine.addEventListener('message', (message) => {
    const event = JSON.parse(message.data);
    emit(event.kind, event.data);
  });
  mine.addEventListener('error', () => {
    if (mine !== source) return;
    // The browser retries by itself unless the daemon refused the stream (too many
    // pages open, or after a logout): then we try again, more and more slowly.
    if (mine.readyState !== EventSource.CLOSED) {
      setOnline(false);
      return;
    }
    const delay = retryDelay;
    retryTimer = setTimeout(connect, delay);
    retryDelay = Math.min(retryDelay * 2, 30000);
    refused(mine, delay);
  });
}

// Why the daemon refused: still logged in means the stream was one too many.
async function refused(mine, delay) {
  let loggedIn = false;
  try {
    const answer = await fetch('/api/v1/session', { cache: 'no-store' });
    loggedIn = answer.ok;
  } catch (error) {
    loggedIn = false;
  }
  if (mine !== source || mine.readyState !== EventSource.CLOSED) return;
  if (!loggedIn) {
    setOnline(false);
    return;
  }
  online = false;
  emit('paused', { retryIn: delay });
}
