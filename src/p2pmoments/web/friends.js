// Friends: online or last seen, rename, block, unblock, remove; pairings still open.

import * as api from './api.js';
import { startChat } from './chat.js';
import {
  append, avatar, clear, confirmDialog, empty, errorText, h, icon, promptDialog, relativeTime, toast,
} from './dom.js';
import { onChange, state } from './state.js';

async function act(method, path, body, done) {
  try {
    await api.request(method, path, body);
    if (done) toast(done);
  } catch (error) {
    toast(errorText(error), 'error');
  }
}

function seen(f) {
  if (f.state === 'blocked') return 'Blocked';
  if (f.connected) return 'Online now';
  return f.last_seen ? `Last seen ${relativeTime(f.last_seen)}` : 'Not seen yet';
}

function friendRow(f) {
  const ref = `/friends/${api.q(f.identity)}`;
  const blocked = f.state === 'blocked';
  const menu = h('div', { class: 'row-actions' },
    blocked ? null : h('button', { type: 'button', class: 'button small', onclick: () => startChat(f) }, icon('comment'), 'Message'),
    h('button', {
      type: 'button',
      class: 'button quiet small',
      onclick: async () => {
        const name = await promptDialog({ title: `Rename ${f.name}`, label: 'What you call them', value: f.name });
        if (name) act('PATCH', ref, { name }, `Renamed to ${name}.`);
      },
    }, 'Rename'),
    h('button', {
      type: 'button',
      class: 'button quiet small',
      onclick: async () => {
        if (blocked) {
          act('POST', `${ref}/unblock`, undefined, `${f.name} is unblocked.`);
          return;
        }
        const yes = await confirmDialog({
          title: `Block ${f.name}?`,
          text: 'Their device can no longer connect to yours, until you unblock them. They stay in your list.',
          ok: 'Block',
          danger: true,
        });
        if (yes) act('POST', `${ref}/block`, undefined, `${f.name} is blocked.`);
      },
    }, blocked ? 'Unblock' : 'Block'),
    h('button', {
      type: 'button',
      class: 'button quiet small',
      onclick: async () => {
        const yes = await confirmDialog({
          title: `Remove ${f.name} from your friends?`,
          text: 'You stop being friends and their device is disconnected. To be friends again, you will need to scan a code again.',
          ok: 'Remove',
          danger: true,
        });
        if (yes) act('DELETE', ref, undefined, `${f.name} is no longer your friend.`);
      },
    }, 'Remove'));
  return h('li', { class: `friend${blocked ? ' blocked' : ''}` },
    h('span', { class: 'avatar-wrap' }, avatar(f), f.connected ? h('span', { class: 'dot online', title: 'Online' }) : null),
    h('span', { class: 'row-main' },
      h('strong', {}, f.name),
      f.their_name !== f.name ? h('small', {}, `calls themselves ${f.their_name}`) : null,
      h('small', { class: f.connected ? 'online-text' : '' }, seen(f))),
    menu);
}

const STATES = {
  pending: 'Waiting to meet their device',
  confirmed: 'Now friends',
  expired: 'The code expired',
  refused: 'Refused',
};

export function friendsView(root) {
  const list = h('ul', { class: 'friends card', 'aria-label': 'Friends' });
  const pairings = h('section', { class: 'pairings', 'aria-labelledby': 'pairings-title' });
  const top = h('div', {});
  const draw = () => {
    const friends = state.friends;
    clear(top, friends.length ? null : empty('No friends yet',
      'Friends are made face to face: one of you shows a code, the other scans it.',
      h('a', { class: 'button primary', href: '#/pair' }, 'Add a friend')));
    clear(list, friends.map(friendRow));
    list.hidden = !friends.length;
    const open = state.pairings.filter((p) => p.state !== 'confirmed').slice(0, 10);
    pairings.hidden = !open.length; // no name without its heading: not a region then
    clear(pairings, open.length ? [
      h('h2', { id: 'pairings-title' }, 'Pairing'),
      h('ul', { class: 'rows card' }, open.map((p) => h('li', { class: `row pairing ${p.state}` },
        avatar({ name: p.name || '?', identity: p.identity ?? '' }, 's'),
        h('span', { class: 'row-main' },
          h('strong', {}, p.name || 'Someone'),
          h('small', {}, `${p.direction === 'out' ? 'You scanned their code' : 'They scanned your code'} · ${relativeTime(p.updated)}`)),
        h('span', { class: `state state-${p.state}` }, STATES[p.state] ?? p.state, p.reason ? `: ${p.reason}` : '')))),
    ] : []);
  };
  append(root,
    h('div', { class: 'view-head' }, h('h1', { class: 'view-title' }, 'Friends'),
      h('a', { class: 'button primary small', href: '#/pair' }, icon('plus'), 'Add a friend')),
    top, list, pairings);
  draw();
  return onChange((what) => { if (what === 'friends') draw(); });
}
