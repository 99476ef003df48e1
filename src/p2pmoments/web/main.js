// The app: log in check, shared state, live events, and a hash router over the views.

import { Backoff, prefetch, startSession } from './api.js';
import { chatView, chatsView } from './chat.js';
import { circleView, circlesView } from './circles.js';
import {
  clear, empty, h, refreshTimes, unreadText,
} from './dom.js';
import { PAGE, feedView } from './feed.js';
import { friendsView } from './friends.js';
import { galleryView } from './gallery.js';
import { connect, on } from './live.js';
import { noteView, notesView } from './notes.js';
import { startNotifications } from './notify.js';
import { pairView } from './pair.js';
import {
  follow, isConversation, loadAll, onChange, state, unreadIn,
} from './state.js';
import { statusView } from './status.js';

const main = document.getElementById('main');
const routes = {
  feed: feedView,
  chats: chatsView,
  chat: chatView,
  circles: circlesView,
  circle: circleView,
  gallery: galleryView,
  friends: friendsView,
  pair: pairView,
  me: statusView,
  notes: notesView,
  note: noteView,
};
const titles = {
  feed: 'Feed', chats: 'Chats', chat: 'Chat', circles: 'Circles', circle: 'Circle', gallery: 'Photos',
  friends: 'Friends', pair: 'Add a friend', me: 'Me', notes: 'Notes', note: 'Note',
};
let cleanup = null;
let current = '';
const startAgain = new Backoff(2000);

function parse() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  return { name: routes[name] ? name : 'feed', args: rest.map(decodeURIComponent) };
}

function show(force = false) {
  const { name, args } = parse();
  const key = `${name}/${args.join('/')}`;
  if (key === current && !force) return;
  current = key;
  if (cleanup) cleanup();
  cleanup = null;
  clear(main);
  document.body.dataset.view = name;
  document.title = `${titles[name]} · Moments`;
  for (const link of document.querySelectorAll('[data-nav]')) {
    const here = link.dataset.nav === name || (name === 'chat' && link.dataset.nav === 'chats')
      || ((name === 'circle' || name === 'gallery' || name === 'notes' || name === 'note') && link.dataset.nav === 'circles');
    if (here) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  cleanup = routes[name](main, args) ?? null;
}

function showLoggedOut() {
  if (cleanup) cleanup();
  cleanup = null;
  current = '';
  document.body.dataset.view = 'logged-out';
  clear(main, h('div', { class: 'message-page' },
    h('img', { src: new URL('./icon.svg', import.meta.url).href, alt: '', width: 64, height: 64 }),
    h('h1', {}, 'Open Moments from your computer'),
    h('p', {}, 'This browser is not logged in to Moments on this computer (or its session ended).'),
    h('p', {}, 'In a terminal, run ', h('code', {}, 'p2pmoments open'),
      ' and this page opens logged in.')));
}

function badge() {
  const pending = state.pairings.filter((p) => p.state === 'pending').length;
  const el = document.querySelector('[data-pending]');
  el.hidden = pending === 0;
  el.textContent = pending ? String(pending) : '';
  el.setAttribute('aria-label', `${pending} pending`);
}

// Unread posts: chats' on Chats, every other circle's on Feed.
function unreadBadges() {
  for (const [name, chats] of [['feed', false], ['chats', true]]) {
    const n = state.circles.filter((c) => isConversation(c) === chats)
      .reduce((sum, c) => sum + unreadIn(c.id), 0);
    const el = document.querySelector(`[data-unread="${name}"]`);
    el.hidden = n === 0;
    el.replaceChildren(...(n ? unreadText(n) : []));
  }
}

async function start() {
  window.addEventListener('p2pm:logged-out', showLoggedOut);
  try {
    // Reads need no CSRF token: ask for everything at once, the feed's first page too.
    if (parse().name === 'feed' && !parse().args.length) prefetch(`/moments?limit=${PAGE}&kind=album`);
    await Promise.all([startSession(), loadAll()]);
  } catch (error) {
    if (error.status === 401) {
      showLoggedOut();
      return;
    }
    clear(main, empty('Moments on this computer does not answer', 'Is p2pmoments still running? This page tries again by itself.'));
    setTimeout(start, startAgain.next());
    return;
  }
  follow();
  startNotifications();
  connect();
  const banner = document.querySelector('[data-connection]');
  on('offline', () => {
    banner.textContent = 'Reconnecting to your daemon…';
    banner.hidden = false;
  });
  on('paused', ({ retryIn }) => {
    banner.textContent = 'Live updates are paused: too many pages of this app are open. '
      + `Close one, or wait: this page tries again in ${Math.round(retryIn / 1000)} s.`;
    banner.hidden = false;
  });
  on('online', () => { banner.hidden = true; });
  on('gap', () => startSession().catch(() => {}));
  onChange((what) => {
    if (what === 'friends') badge();
    if (what === 'unread' || what === 'circles') unreadBadges();
  });
  badge();
  unreadBadges();
  window.addEventListener('hashchange', () => show());
  show(true);
  setInterval(() => refreshTimes(main), 30000);
}

start();
