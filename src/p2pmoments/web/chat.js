// Conversations: a small circle where everyone may post, shown as a chat thread
// (newest at the bottom, live, a text box at the bottom), as WhatsApp and Line do.

import * as api from './api.js';
import { attachments, send } from './compose.js';
import {
  append, avatar, clear, clockTime, count, dayLabel, daysAgo, empty, errorText, h, icon, person, relativeTime,
  shortTime, toast,
} from './dom.js';
import { Pager, incomplete } from './feed.js';
import { on } from './live.js';
import {
  chatWith, circleById, conversationTitle, hasArrived, isConversation, isMe, loadCircles, markRead,
  onChange, others, state, unreadIn,
} from './state.js';
import { muteButton, offerNotifications } from './notify.js';
import { openViewer } from './viewer.js';

/**
 * Open the one-to-one conversation with a friend: the one either of us started, else a
 * new one. Never an album, whatever albums we share (issue 20, item 1).
 */
export async function startChat(friend) {
  const existing = chatWith(friend.identity);
  if (existing) {
    location.hash = `#/chat/${encodeURIComponent(existing.id)}`;
    return;
  }
  const base = `${state.me.name} & ${friend.name}`;
  let name = base;
  while (new TextEncoder().encode(name).length > 32) name = [...name].slice(0, -1).join('');
  const taken = new Set(state.circles.filter((c) => c.mine).map((c) => c.name.toLowerCase()));
  for (let n = 2; taken.has(name.toLowerCase()) && n < 100; n += 1) name = `chat ${friend.name.slice(0, 20)} ${n}`;
  await makeConversation(name, [friend.identity]);
}

async function makeConversation(name, members) {
  try {
    const circle = await api.post('/circles', { name, members, kind: 'conversation' });
    await loadCircles();
    location.hash = `#/chat/${encodeURIComponent(circle.id)}`;
  } catch (error) {
    toast(errorText(error), 'error');
  }
}

/** A named group conversation: its name and some friends. */
function groupForm(people) {
  const name = h('input', { type: 'text', name: 'name', required: true, maxLength: 32, autocomplete: 'off' });
  const boxes = people.map((f) => h('label', { class: 'pick' },
    h('input', { type: 'checkbox', name: 'member', value: f.identity }), avatar(f, 's'), h('span', {}, f.name)));
  return h('form', {
    class: 'card group-form',
    'aria-label': 'New group',
    onsubmit: (e) => {
      e.preventDefault();
      const chosen = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
      if (!chosen.length) {
        toast('Choose who is in the group', 'error');
        return;
      }
      makeConversation(name.value.trim(), chosen);
    },
  }, h('h2', {}, 'New group'),
  h('label', { class: 'field' }, h('span', {}, 'Group name'), name),
  h('fieldset', { class: 'picks' }, h('legend', {}, 'Who is in it'), boxes),
  h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'button' }, 'Make the group')));
}

/** What a chat list row says of a conversation's last message. */
function preview(c, m) {
  if (!m) return others(c).map((p) => p.name).join(', ') || 'Only you so far';
  const who = isMe(m.author) ? 'You: ' : (others(c).length > 1 ? `${person(m.author).name}: ` : '');
  if (m.retracted) return `${who}This message was deleted`;
  const what = m.text || (m.photos.length ? (m.photos.length === 1 ? 'Photo' : `${m.photos.length} photos`)
    : m.files.map((f) => f.name).join(', '));
  return who + what;
}

export function chatsView(root) {
  const list = h('ul', { class: 'rows card', 'aria-label': 'Conversations' });
  const friends = h('div', { class: 'card start-chat' });
  const last = new Map(); // conversation id -> its newest message (null: none yet)
  let stopped = false;
  async function fetchLast(id) {
    try {
      const page = await api.get(`/moments?circle=${api.q(id)}&limit=1`);
      last.set(id, page.moments[0] ?? null);
    } catch {
      last.set(id, null);
    }
    if (!stopped) draw();
  }
  const draw = () => {
    const chats = state.circles.filter(isConversation);
    for (const c of chats) if (!last.has(c.id)) { last.set(c.id, null); fetchLast(c.id); }
    // Newest conversation first, as messengers list them.
    chats.sort((a, b) => (last.get(b.id)?.order ?? '').localeCompare(last.get(a.id)?.order ?? ''));
    clear(list, chats.map((c) => {
      const m = last.get(c.id);
      return h('li', {},
        h('a', { class: 'row-link chat-row', href: `#/chat/${encodeURIComponent(c.id)}` },
          h('span', { class: 'stack' }, others(c).slice(0, 3).map((p) => avatar(p, 's'))),
          h('span', { class: 'row-main' },
            h('span', { class: 'row-top' }, h('strong', {}, conversationTitle(c)),
              m ? h('time', { class: 'row-time', datetime: new Date(m.time * 1000).toISOString(), title: relativeTime(m.time) }, shortTime(m.time)) : null),
            h('small', { class: 'last-message' }, preview(c, m))),
          count(unreadIn(c.id)),
          icon('right')));
    }));
    list.hidden = !chats.length;
    const people = state.friends.filter((f) => f.state === 'friend');
    clear(friends, h('h2', {}, 'Start a chat'),
      people.length ? h('ul', { class: 'people' }, people.map((f) => h('li', {},
        h('button', { type: 'button', class: 'person-button', onclick: () => startChat(f), 'aria-label': `Chat with ${f.name}` },
          avatar(f), h('span', {}, f.name), f.connected ? h('span', { class: 'dot online', 'aria-hidden': 'true' }) : null))))
        : h('p', { class: 'muted' }, 'Add a friend first: ', h('a', { href: '#/pair' }, 'show or scan a code'), '.'));
    if (people.length > 1 && !group.firstChild) group.append(groupForm(people));
  };
  const group = h('div', {});
  append(root, h('h1', { class: 'view-title' }, 'Chats'), list, friends, group);
  draw();
  const offs = [
    onChange((what) => { if (what === 'circles' || what === 'friends' || what === 'unread') draw(); }),
    on('moment.added', (data) => { if (data.kind === 'post' && last.has(data.circle)) fetchLast(data.circle); }),
    on('moment.retracted', (data) => {
      for (const [id, m] of last) if (m?.id === data.id) fetchLast(id);
    }),
    on('gap', () => { for (const id of last.keys()) fetchLast(id); }),
  ];
  return () => {
    stopped = true;
    for (const off of offs) off();
  };
}

/**
 * Where one of my messages is, as WhatsApp shows it: one tick sent, two delivered (every
 * other member's daemon has it), two blue read (every other member read it, and lets
 * me know: read receipts are theirs to allow).
 */
function ticks(m, circle) {
  const n = others(circle).length;
  const where = n && m.read_by.length >= n ? 'read' : n && m.delivered_to.length >= n ? 'delivered' : 'sent';
  const label = { sent: 'Sent', delivered: 'Delivered', read: 'Read' }[where];
  return h('span', { class: `ticks ${where}`, role: 'img', 'aria-label': label, title: label }, where === 'sent' ? '✓' : '✓✓');
}

/** Edit one of my messages in its bubble: every member sees the new text, "edited". */
function editMessage(el, m, done) {
  if (el.querySelector('.edit-form')) return;
  const field = h('textarea', { name: 'text', rows: 2, 'aria-label': 'Edit the message' });
  field.value = m.text;
  const error = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', {
    class: 'edit-form',
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        done(await api.patch(`/moments/${api.q(m.id)}`, { text: field.value }));
      } catch (failure) {
        error.textContent = errorText(failure);
      }
    },
  }, field, error, h('div', { class: 'form-actions' },
    h('button', { type: 'button', class: 'button quiet small', onclick: () => done(m) }, 'Cancel'),
    h('button', { type: 'submit', class: 'button small' }, 'Save')));
  el.querySelector('.bubble').replaceChildren(form);
  field.focus();
}

function bubble(m, group, circle, onEdit) {
  const mine = isMe(m.author);
  const who = person(m.author);
  if (m.retracted) {
    return h('li', { class: `message retracted${mine ? ' mine' : ''}`, dataset: { id: m.id } },
      h('p', { class: 'bubble' }, mine ? 'You deleted this message' : 'This message was deleted'));
  }
  const photos = m.photos.map((p, i) => h('button', {
    type: 'button',
    class: 'chat-photo',
    'aria-label': `Open photo ${i + 1} from ${who.name}`,
    onclick: () => openViewer(m, i),
  }, h('img', { src: api.urls.thumbnail(m.id, p.n) + (p.chunks_held < p.chunks ? `?try=${p.chunks_held}` : ''), alt: `Photo ${i + 1} from ${who.name}`, loading: 'lazy' })));
  return h('li', { class: `message${mine ? ' mine' : ''}`, dataset: { id: m.id } },
    mine ? null : avatar(m.author, 's'),
    h('div', { class: 'bubble' },
      // In a one-to-one chat everyone knows who wrote what: no name on every bubble.
      mine || !group ? null : h('span', { class: 'author' }, who.name),
      photos.length ? h('div', { class: 'chat-photos' }, photos) : null,
      m.text ? h('p', { class: 'text' }, m.text) : null,
      h('span', { class: 'meta' },
        m.edited ? h('span', { class: 'edited' }, 'edited') : null,
        h('time', { datetime: new Date(m.time * 1000).toISOString(), title: relativeTime(m.time) }, clockTime(m.time)),
        mine ? ticks(m, circle) : null,
        mine ? h('button', { type: 'button', class: 'link-button edit-message', onclick: onEdit }, 'Edit') : null)));
}

export function chatView(root, [id]) {
  const circle = circleById(id);
  if (!circle) {
    append(root, empty('This conversation is gone', 'It was deleted, or you were removed from it.', h('a', { class: 'button', href: '#/chats' }, 'All chats')));
    return null;
  }
  const shown = new Map(); // id -> element
  const thread = h('ol', { class: 'thread', 'aria-label': `Messages with ${conversationTitle(circle)}`, 'aria-live': 'polite' });
  const older = h('button', { type: 'button', class: 'button quiet small older', hidden: true }, 'Earlier messages');
  const scroller = h('div', { class: 'thread-scroll' }, older, thread);
  const text = h('textarea', { rows: 1, name: 'text', placeholder: 'Message', 'aria-label': 'Message', autocomplete: 'off' });
  const files = attachments();
  const error = h('p', { class: 'form-error', role: 'alert' });
  const sendButton = h('button', { type: 'submit', class: 'send', 'aria-label': 'Send' }, icon('send'));
  let pager = new Pager(`circle=${api.q(id)}`, (m) => shown.has(m));

  const nearBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  const toBottom = () => { scroller.scrollTop = scroller.scrollHeight; };
  // It opens at the newest message, and stays there while photos load and messages
  // come, unless the person scrolls up to read.
  let stick = true;
  scroller.addEventListener('scroll', () => { stick = nearBottom(); });
  const growing = new ResizeObserver(() => { if (stick) toBottom(); });
  growing.observe(thread);

  function place(m, edited = false) {
    // A message being edited is not redrawn under the person's hands by live updates.
    if (!edited && shown.get(m.id)?.querySelector('.edit-form')) return;
    const now = circleById(id) ?? circle;
    const el = bubble(m, others(now).length > 1, now, () => editMessage(el, m, (x) => place(x, true)));
    el.dataset.order = m.order;
    el.dataset.time = String(m.time);
    const old = shown.get(m.id);
    if (old) {
      old.replaceWith(el);
    } else {
      // Keep the thread in the order the daemon gives (time, then the order each author
      // sent in), whatever order messages arrive or pages load in.
      const after = [...thread.children].find((e) => e.dataset.order > m.order);
      if (after) after.before(el);
      else thread.append(el);
    }
    shown.set(m.id, el);
    if (incomplete(m) && hasArrived(m.id)) refresh(m.id); // it came while being fetched
    days();
    seen();
  }

  // A separator before the first message of each day: Today, Yesterday, Monday 7 December.
  function days() {
    for (const el of thread.querySelectorAll('.day')) el.remove();
    let previous = null;
    for (const el of [...thread.children]) {
      const day = daysAgo(Number(el.dataset.time));
      if (day !== previous) el.before(h('li', { class: 'day' }, h('span', {}, dayLabel(Number(el.dataset.time)))));
      previous = day;
    }
  }

  // What is on screen is read: up to the newest message (once the page is in view).
  function seen() {
    const last = thread.lastElementChild;
    if (last) markRead(id, { id: last.dataset.id, order: last.dataset.order });
  }

  async function loadOlder(first) {
    if (pager.done) return;
    const height = scroller.scrollHeight;
    for (const m of await pager.next()) place(m);
    older.hidden = pager.done;
    if (first) toBottom();
    else scroller.scrollTop += scroller.scrollHeight - height;
  }

  const form = h('form', {
    class: 'chat-form',
    onsubmit: async (e) => {
      e.preventDefault();
      const words = text.value.trim();
      if (!words && !files.items.length) return;
      error.textContent = '';
      sendButton.disabled = true;
      try {
        const m = await send({ circle: id, text: words, expires: '', items: files.items }, () => {});
        text.value = '';
        files.reset();
        place(m);
        toBottom();
        // Once a message is sent, knowing of the answer makes sense: ask then, not on load.
        const offer = offerNotifications(conversationTitle(circleById(id) ?? circle));
        if (offer) form.before(offer);
      } catch (failure) {
        error.textContent = `Not sent: ${errorText(failure)}`;
      } finally {
        sendButton.disabled = false;
        text.focus();
      }
    },
  }, files.strip, error, h('div', { class: 'chat-bar' }, ...files.buttons.slice(0, 1), files.buttons[2], text, sendButton));
  text.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  files.listen(form, text);
  older.addEventListener('click', () => loadOlder(false).catch((err) => toast(errorText(err), 'error')));

  const title = h('h1', { class: 'chat-title' }, conversationTitle(circle));
  append(root, h('div', { class: 'chat' },
    h('header', { class: 'chat-head' },
      h('a', { href: '#/chats', class: 'icon-button', 'aria-label': 'All chats' }, icon('back')),
      h('span', { class: 'stack' }, others(circle).slice(0, 3).map((m) => avatar(m, 's'))),
      title,
      muteButton(id),
      h('a', { href: `#/circle/${encodeURIComponent(id)}`, class: 'button quiet small' }, 'Details')),
    scroller, form));

  let ticking = null;
  function ticksSoon() {
    if (ticking) return;
    ticking = setTimeout(async () => {
      ticking = null;
      try {
        const page = await api.get(`/moments?circle=${api.q(id)}&limit=50`);
        for (const m of page.moments) if (shown.has(m.id) && isMe(m.author)) place(m);
      } catch { /* gone meanwhile */ }
    }, 100);
  }

  async function refresh(momentId) {
    try {
      const m = await api.get(`/moments/${api.q(momentId)}`);
      const stick = nearBottom();
      place(m);
      if (stick) toBottom();
    } catch { /* gone */ }
  }

  const offs = [
    on('moment.added', (data) => {
      if (data.circle === id && data.kind === 'post' && !shown.has(data.id)) refresh(data.id);
    }),
    on('moment.retracted', (data) => { if (shown.has(data.id)) refresh(data.id); }),
    on('moment.edited', (data) => { if (shown.has(data.id)) refresh(data.id); }),
    // My messages' ticks: a member's daemon holds more of them, or a member read them.
    on('moment.delivered', (data) => { if (data.circle === id) ticksSoon(); }),
    on('moment.read', (data) => { if (data.circle === id) ticksSoon(); }),
    on('transfer.done', (data) => { if (shown.has(data.moment)) refresh(data.moment); }),
    on('gap', () => {
      shown.clear();
      thread.replaceChildren();
      pager = new Pager(pager.filter, pager.known);
      loadOlder(true).catch(() => {});
    }),
    onChange((what) => {
      if (what !== 'circles') return;
      const c = circleById(id);
      if (c) title.textContent = conversationTitle(c);
    }),
  ];
  loadOlder(true).catch((err) => { error.textContent = errorText(err); });
  text.focus();
  document.addEventListener('visibilitychange', seen);
  return () => {
    clearTimeout(ticking);
    growing.disconnect();
    document.removeEventListener('visibilitychange', seen);
    for (const off of offs) off();
  };
}
