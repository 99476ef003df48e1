// Browser notifications (issue 20, item 5): new moments, comments on mine and chat
// messages, once the person allows them. Asked when it makes sense (after a first
// message sent, or from Me), never on load; muted per circle or chat; nothing shown
// for what the person is looking at. Kept in this browser (localStorage): a choice
// about this screen, as the permission itself is.

import * as api from './api.js';
import { h, person } from './dom.js';
import { on } from './live.js';
import { circleById, conversationTitle, isConversation, isMe } from './state.js';

const KEY = 'p2pm-notifications'; // {on: bool, asked: bool, muted: [circle id]}

function saved() {
  try {
    return { on: false, asked: false, muted: [], ...JSON.parse(localStorage.getItem(KEY) ?? '{}') };
  } catch {
    return { on: false, asked: false, muted: [] };
  }
}

function save(change) {
  localStorage.setItem(KEY, JSON.stringify({ ...saved(), ...change }));
}

export const supported = () => 'Notification' in window;

/** True if notifications are on: allowed by the browser and not turned off here. */
export function enabled() {
  return supported() && Notification.permission === 'granted' && saved().on;
}

/** Ask the browser (from a click), and turn them on if it agrees. */
export async function turnOn() {
  save({ asked: true });
  const answer = await Notification.requestPermission();
  save({ on: answer === 'granted' });
  return answer === 'granted';
}

export function turnOff() {
  save({ on: false, asked: true });
}

export const muted = (circleId) => saved().muted.includes(circleId);

export function setMuted(circleId, yes) {
  const rest = saved().muted.filter((c) => c !== circleId);
  save({ muted: yes ? [...rest, circleId].slice(-500) : rest });
}

/** A button that mutes or unmutes one circle's or chat's notifications. */
export function muteButton(circleId) {
  const button = h('button', { type: 'button', class: 'button quiet small mute' });
  const draw = () => {
    const off = muted(circleId);
    button.textContent = off ? 'Unmute' : 'Mute';
    button.setAttribute('aria-pressed', String(off));
    button.title = off ? 'No notifications from here: turn them back on' : 'No notifications from here';
  };
  button.addEventListener('click', () => {
    setMuted(circleId, !muted(circleId));
    draw();
  });
  draw();
  return button;
}

/**
 * After a first message: offer notifications once, if the browser has not been asked.
 * Returns the offer to show, or null.
 */
export function offerNotifications(who) {
  if (!supported() || Notification.permission !== 'default' || saved().asked) return null;
  save({ asked: true });
  const offer = h('div', { class: 'notice notify-offer', role: 'note' },
    h('p', {}, `Get a notification when ${who} answers?`),
    h('div', { class: 'button-row' },
      h('button', {
        type: 'button',
        class: 'button primary small',
        onclick: async () => {
          await turnOn();
          offer.remove();
        },
      }, 'Turn on notifications'),
      h('button', { type: 'button', class: 'button quiet small', onclick: () => offer.remove() }, 'Not now')));
  return offer;
}

/** True if the open view shows what happens in this circle: its chat, its own feed, or
 * (an album's) the feed of albums, on a visible page. */
function lookingAt(circleId) {
  if (document.visibilityState !== 'visible') return false;
  const [name, id] = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  if (name === 'chat') return id === circleId;
  if (name !== 'feed' && name !== '') return false;
  if (id) return id === circleId;
  const circle = circleById(circleId);
  return Boolean(circle && !isConversation(circle));
}

function show(title, body, tag, hash) {
  const note = new Notification(title, { body, tag });
  note.onclick = () => {
    window.focus();
    location.hash = hash;
    note.close();
  };
}

function what(m) {
  if (m.text) return m.text.length > 120 ? `${m.text.slice(0, 119)}…` : m.text;
  if (m.photos.length) return m.photos.length === 1 ? 'Photo' : `${m.photos.length} photos`;
  return m.files.map((f) => f.name).join(', ');
}

async function added(data) {
  if (!enabled() || muted(data.circle) || lookingAt(data.circle)) return;
  const circle = circleById(data.circle);
  if (!circle) return;
  if (data.kind === 'post') {
    const m = await api.get(`/moments/${api.q(data.id)}`);
    if (isMe(m.author) || lookingAt(data.circle)) return;
    const who = person(m.author).name;
    if (isConversation(circle)) {
      const title = circle.members.length > 2 ? `${who} in ${conversationTitle(circle)}` : who;
      show(title, what(m), data.id, `#/chat/${encodeURIComponent(circle.id)}`);
    } else {
      show(`${who} in ${circle.name}`, what(m), data.id, `#/feed/${encodeURIComponent(circle.id)}`);
    }
  } else if (data.kind === 'comment' && data.reply_to) {
    // Only comments on my own moments; never my own comments.
    const m = await api.get(`/moments/${api.q(data.reply_to)}`);
    const said = m.comments.find((c) => c.id === data.id);
    if (!isMe(m.author) || !said || isMe(said.author) || lookingAt(data.circle)) return;
    show(`${person(said.author).name} commented on your moment`, said.text, data.id,
      `#/feed/${encodeURIComponent(circle.id)}`);
  }
}

/** Follow live events and notify; once, at start. */
export function startNotifications() {
  on('moment.added', (data) => { added(data).catch(() => { /* gone meanwhile */ }); });
}
