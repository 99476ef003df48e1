// What several views share: who I am, my circles, my friends, transfers in progress.
// Kept fresh by live events; views subscribe with onChange.

import { get, post, q } from './api.js';
import { setPictures } from './dom.js';
import { on } from './live.js';

export const state = {
  me: null, // {name, identity}
  circles: [],
  friends: [],
  pairings: [],
  transfers: new Map(), // moment id -> {held, total}
  arrived: new Set(), // moments whose photos and files all arrived while this page was open
  unread: new Map(), // circle id -> {unread, read_to}: kept by the daemon (GET /unread)
};

/** True if a moment's photos and files arrived (a card drawn just before may not know). */
export function hasArrived(id) {
  return state.arrived.has(id);
}

const watchers = new Set();

export function onChange(fn) {
  watchers.add(fn);
  return () => watchers.delete(fn);
}

function changed(what) {
  for (const fn of watchers) fn(what);
}

export async function loadMe() {
  state.me = await get('/profile');
  changed('me');
}

export async function loadCircles() {
  state.circles = (await get('/circles')).circles;
  changed('circles');
}

export async function loadFriends() {
  const answer = await get('/friends');
  state.friends = answer.friends;
  state.pairings = answer.pairings;
  changed('friends');
}

function setUnread(answer) {
  state.unread = new Map(answer.circles.map((c) => [c.id, c]));
  changed('unread');
}

export async function loadUnread() {
  setUnread(await get('/unread'));
}

/** Posts in a circle the person has not seen (their own never count). */
export function unreadIn(id) {
  return state.unread.get(id)?.unread ?? 0;
}

/** The read mark of a circle, as a post's `order` (null: nothing read there yet). */
export function readTo(id) {
  return state.unread.get(id)?.read_to ?? null;
}

const marking = new Map(); // circle id -> the order of the mark being sent

/**
 * The person has seen a circle up to this post (shown in a visible page): the daemon
 * keeps the mark and tells every other page, so all counts agree.
 */
export async function markRead(circleId, moment) {
  if (document.visibilityState !== 'visible' || !moment?.order) return;
  const mark = readTo(circleId);
  if ((mark && mark >= moment.order) || (marking.get(circleId) ?? '') >= moment.order) return;
  marking.set(circleId, moment.order);
  try {
    setUnread(await post(`/circles/${q(circleId)}/read`, { moment: moment.id }));
  } catch {
    // gone meanwhile, or the daemon is away: the next view tries again
  } finally {
    if (marking.get(circleId) === moment.order) marking.delete(circleId);
  }
}

/** Whose profile pictures the daemon holds; every avatar on the page follows. */
export async function loadPictures() {
  setPictures((await get('/pictures')).pictures);
  changed('pictures');
}

export const loadAll = () => Promise.all([loadMe(), loadCircles(), loadFriends(), loadUnread(),
  loadPictures()]);

export function circleById(id) {
  return state.circles.find((c) => c.id === id);
}

export function canPost(circle) {
  return !circle.removed && (circle.mine || circle.members_can_post);
}

/**
 * A person as {identity, name}. Some answers still name people by their name alone
 * (a comment's author): find who that is among me and my friends, for their avatar.
 */
export function personOf(p) {
  if (p && typeof p === 'object') return p;
  if (state.me && p === state.me.name) return state.me;
  return state.friends.find((f) => f.name === p) ?? { identity: '', name: String(p ?? '?') };
}

export function isMe(p) {
  return Boolean(state.me && p && typeof p === 'object' && p.identity === state.me.identity);
}

/** Members of a circle other than me. */
export function others(circle) {
  return circle.members.filter((m) => m.identity !== state.me?.identity);
}

/**
 * A conversation (a one-to-one chat or a named group: kind "conversation", made by
 * "Message …"), apart from the albums its people share: never listed among them.
 */
export function isConversation(circle) {
  return circle.kind === 'conversation';
}

/** The circles that are albums: the feed's, the composer's, the Circles page's. */
export function albums() {
  return state.circles.filter((c) => !isConversation(c));
}

/** A one-to-one conversation with this person (whoever started it), if there is one. */
export function chatWith(identity) {
  return state.circles.find((c) => isConversation(c) && !c.removed && c.members.length === 2
    && c.members.some((m) => m.identity === identity));
}

/** What to call a conversation: the other people in it, unless it is a named group. */
export function conversationTitle(circle) {
  const names = others(circle).map((m) => m.name);
  if (!names.length) return circle.name;
  if (circle.members.length === 2 || circle.name.includes(' & ')) return names.join(', ');
  return circle.name;
}

let throttled = new Map();
function soon(key, fn, ms = 200) {
  if (throttled.has(key)) return;
  throttled.set(key, setTimeout(() => {
    throttled.delete(key);
    fn().catch(() => {});
  }, ms));
}

export function follow() {
  for (const kind of ['circle.created', 'circle.joined', 'circle.changed', 'circle.deleted',
    'circle.removed']) {
    on(kind, () => soon('circles', loadCircles));
  }
  for (const kind of ['friend.added', 'friend.removed', 'friend.renamed', 'friend.blocked',
    'friend.unblocked', 'peer.connected', 'peer.disconnected', 'pairing.pending',
    'pairing.confirmed', 'pairing.refused', 'pairing.expired']) {
    on(kind, () => soon('friends', loadFriends));
  }
  // A friend renamed changes names shown in circles too.
  on('friend.renamed', () => soon('circles', loadCircles));
  // Counts: a post arrived, a mark moved (in this page or another), circles changed.
  for (const kind of ['circle.read', 'circle.created', 'circle.joined', 'circle.deleted',
    'circle.removed']) {
    on(kind, () => soon('unread', loadUnread));
  }
  on('moment.added', (data) => { if (data.kind === 'post') soon('unread', loadUnread); });
  on('moment.retracted', () => soon('unread', loadUnread));
  on('person.picture', () => soon('pictures', loadPictures));
  on('transfer.chunk', (data) => {
    state.transfers.set(data.moment, { held: data.held, total: data.total });
    changed('transfers');
  });
  on('transfer.done', (data) => {
    state.transfers.delete(data.moment);
    state.arrived.add(data.moment);
    if (state.arrived.size > 1000) state.arrived.delete(state.arrived.values().next().value);
    changed('transfers');
  });
  on('gap', () => {
    throttled = new Map();
    loadAll().catch(() => {});
  });
}
