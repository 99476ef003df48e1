// The feed: moments newest first, all circles or one, paged in as you scroll, live.

import * as api from './api.js';
import { composer } from './compose.js';
import { startChat } from './chat.js';
import {
  append, avatar, byteCounter, clear, confirmDialog, count, empty, errorText, h, icon, person, relativeTime, size,
  timeEl, toast, untilTime,
} from './dom.js';
import { emojiEl } from './emoji.js';
import { on } from './live.js';
import {
  albums, canPost, circleById, hasArrived, isConversation, isMe, markRead, onChange, personOf, readTo, state,
  unreadIn,
} from './state.js';
import { playable, videoPlayer } from './video.js';
import { openViewer } from './viewer.js';
import { newestFile, versionsPanel } from './versions.js';

export const PAGE = 20;
const MAX_PAGE = 200;
const MAX_TEXT = 16 * 1024; // bytes in a moment's or a comment's text (spec/moments.md)
export const REACTIONS = ['❤️', '😂', '🎉', '👍', '😮', '😢'];
const REMOVALS_TOLD = 'p2pm-removals-told'; // removals the person has seen said, as "circle/epoch"

/**
 * Reads a feed a page at a time, oldest last. With the daemon's `next_cursor` it follows
 * the cursor. Without one it has only `next_before`, a time to the second: it asks again
 * from that second (moments already shown are skipped), with a larger page if a page
 * brought nothing new, so that moments sharing a second are not lost.
 */
export class Pager {
  constructor(filter, known) {
    this.filter = filter; // e.g. 'circle=…' or ''
    this.known = known; // id -> already shown?
    this.after = '';
    this.limit = PAGE;
  }

  get done() {
    return this.after === null;
  }

  async next() {
    const query = [`limit=${this.limit}`, this.filter, this.after].filter(Boolean).join('&');
    const page = await api.get(`/moments?${query}`);
    const fresh = page.moments.filter((m) => !this.known(m.id));
    if ('next_cursor' in page) {
      this.after = page.next_cursor ? `cursor=${api.q(page.next_cursor)}` : null;
    } else if (page.next_before == null) {
      this.after = null;
    } else if (fresh.length) {
      this.limit = PAGE;
      this.after = `before=${page.next_before + 1}`;
    } else if (this.limit < MAX_PAGE) {
      this.limit = Math.min(MAX_PAGE, this.limit * 4);
      this.after = `before=${page.next_before + 1}`;
    } else {
      this.limit = PAGE;
      this.after = `before=${page.next_before}`;
    }
    return fresh;
  }
}

export function feedView(root, [circleId]) {
  const cards = new Map(); // moment id -> {el, moment}
  const list = h('ol', { class: 'moments', 'aria-label': 'Moments', 'aria-live': 'off' });
  const sentinel = h('div', { class: 'sentinel', 'aria-hidden': 'true' });
  const status = h('p', { class: 'feed-status', role: 'status' });
  const chips = h('nav', { class: 'chips', 'aria-label': 'Circles' });
  const top = h('div', { class: 'feed-top' });
  const news = h('p', { class: 'new-since', role: 'status' });
  const removals = h('div', { class: 'removals' });
  // Where the person had read up to when this view opened: what lies past it is new.
  const lastVisit = new Map((circleId ? state.circles : albums()).map((c) => [c.id, readTo(c.id)]));
  const isNew = (m) => !m.retracted && !isMe(m.author) && lastVisit.has(m.circle.id)
    && (lastVisit.get(m.circle.id) ?? '') < m.order;
  // How many were new when it opened, loaded yet or not (the daemon's counts).
  const newAtOpen = (circleId ? [circleId] : [...lastVisit.keys()]).reduce((n, id) => n + unreadIn(id), 0);
  // The whole feed is the albums'; chat lines stay in their chats (issue 20, item 1).
  let pager = new Pager(circleId ? `circle=${api.q(circleId)}` : 'kind=album', (id) => cards.has(id));
  let loading = false;
  let stopped = false; // the person left this view: no more requests from it
  let missing = Boolean(circleId && !circleById(circleId)); // a bookmark to a deleted circle
  let retryTimer = null;
  const backoff = new api.Backoff();

  const rail = h('aside', { class: 'rail', 'aria-label': 'Friends and circles' });
  append(root, h('div', { class: 'feed-layout' },
    h('div', { class: 'feed-column' }, h('h1', { class: 'view-title' }, 'Feed'), chips, removals, top, news, list, status, sentinel),
    rail));

  // Wide screens: who is online (one click to chat) and the circles, beside the feed.
  function drawRail() {
    const friends = state.friends.filter((f) => f.state === 'friend')
      .sort((a, b) => Number(b.connected) - Number(a.connected) || a.name.localeCompare(b.name));
    clear(rail,
      h('section', { class: 'card rail-card' },
        h('h2', {}, 'Friends'),
        friends.length ? h('ul', { class: 'rail-list' }, friends.slice(0, 12).map((f) => h('li', {},
          h('a', {
            href: '#/chats',
            class: 'rail-person',
            onclick: (e) => { e.preventDefault(); startChat(f); },
          },
            // Named by what it shows (axe: the name holds the visible label), "Chat with" first.
            h('span', { class: 'avatar-wrap' }, avatar(f, 's'), f.connected ? h('span', { class: 'dot online' }) : null),
            h('span', {}, h('span', { class: 'visually-hidden' }, 'Chat with '), f.name),
            h('small', {}, f.connected ? 'online' : (f.last_seen ? relativeTime(f.last_seen) : ''))))))
          : h('p', { class: 'muted' }, h('a', { href: '#/pair' }, 'Add a friend'), ' to share with.')),
      h('section', { class: 'card rail-card' },
        h('h2', {}, 'Circles'),
        albums().length ? h('ul', { class: 'rail-list' }, albums().map((c) => h('li', {},
          h('a', {
            href: `#/feed/${encodeURIComponent(c.id)}`,
            class: 'rail-circle',
          },
            h('span', {}, c.name), count(unreadIn(c.id)), h('small', {}, `${c.members.length}`,
              h('span', { class: 'visually-hidden' }, c.members.length === 1 ? ' member' : ' members'))))))
          : h('p', { class: 'muted' }, h('a', { href: '#/circles' }, 'Make a circle'), '.')));
  }

  // Removed from a circle: said once, at the top of the feed, until dismissed.
  function drawRemovals() {
    const told = new Set(JSON.parse(localStorage.getItem(REMOVALS_TOLD) ?? '[]'));
    const key = (c) => `${c.id}/${c.removed.epoch}`;
    clear(removals, state.circles.filter((c) => c.removed && !told.has(key(c))
      && (!circleId || c.id === circleId)).map((c) => h('div', { class: 'notice removal', role: 'note' },
      h('p', {}, `${c.owner.name} removed you from ${c.name}. `,
        'You keep what you received; nothing new reaches you. ',
        h('a', { href: `#/circle/${encodeURIComponent(c.id)}` }, 'About this circle')),
      h('button', {
        type: 'button',
        class: 'button quiet small',
        onclick: () => {
          told.add(key(c));
          localStorage.setItem(REMOVALS_TOLD, JSON.stringify([...told].slice(-200)));
          drawRemovals();
        },
      }, 'OK'))));
  }

  function drawChips() {
    clear(chips,
      h('a', { href: '#/feed', class: 'chip', 'aria-current': circleId ? undefined : 'page' }, 'All'),
      albums().map((c) => h('a', {
        href: `#/feed/${encodeURIComponent(c.id)}`,
        class: 'chip',
        'aria-current': c.id === circleId ? 'page' : undefined,
      }, c.name, count(unreadIn(c.id)))));
  }

  function drawTop() {
    const postable = albums().filter(canPost);
    const here = circleId ? circleById(circleId) : null;
    // Circles where only their owner posts: say so, rather than hide the composer.
    const ownersOnly = (here ? [here] : albums()).filter((c) => !c.removed && !canPost(c));
    const whoPosts = ownersOnly.map((c) => `Only ${c.owner.name} posts in ${c.name}.`).join(' ');
    if (missing) {
      clear(top, empty('This circle no longer exists',
        'It was deleted, so there is nothing more to see here.',
        h('a', { class: 'button primary', href: '#/feed' }, 'See all your moments')));
    } else if (!state.friends.length && !state.circles.length) {
      clear(top, empty('Welcome to Moments',
        'Share photos and words with exactly the right people, with no server in between. Start by adding a friend: scan their code, or let them scan yours.',
        h('a', { class: 'button primary', href: '#/pair' }, 'Add a friend')));
    } else if (here && !canPost(here)) {
      clear(top, h('p', { class: 'card who-posts', role: 'note' }, whoPosts || `You can no longer post in ${here.name}.`));
    } else if (!postable.length && ownersOnly.length) {
      clear(top, h('p', { class: 'card who-posts', role: 'note' }, whoPosts, ' ',
        h('a', { href: '#/circles' }, 'Make a circle of your own'), ' to share in.'));
    } else if (!postable.length) {
      clear(top, empty('Make a circle to share in',
        'A circle is a few friends — the family, the pub — who see what you post to it.',
        h('a', { class: 'button primary', href: '#/circles' }, 'Make a circle')));
    } else if (!top.querySelector('.composer')) {
      clear(top, composer({ circleId, onPosted: (m) => add(m, true) }));
    }
  }

  function add(moment, atTop) {
    const existing = cards.get(moment.id);
    // A moment whose text is being edited is not redrawn under the person's hands.
    if (existing?.el.querySelector('.edit-form')) return;
    const el = momentCard(moment, { refresh, fresh: isNew(moment) });
    if (existing) {
      // Keep a comment being typed when the card is drawn again.
      const typing = existing.el.querySelector('.comment-form input');
      const input = el.querySelector('.comment-form input');
      if (typing && input && typing.value) {
        input.value = typing.value;
        input.dispatchEvent(new Event('input'));
      }
      const focused = typing && document.activeElement === typing;
      existing.el.replaceWith(el);
      if (focused && input) input.focus();
    } else if (atTop) {
      // Newer ones arrive live: placed in the feed's order (a burst may come in any order).
      const older = [...list.children].find((e) => e.dataset.order < moment.order);
      if (older) older.before(el);
      else list.append(el);
    } else {
      list.append(el);
    }
    cards.set(moment.id, { el, moment });
    status.textContent = '';
    seenSoon();
    // Its last pieces may have come while it was being fetched: look again.
    if (incomplete(moment) && hasArrived(moment.id)) refresh(moment.id);
  }

  async function refresh(id) {
    if (!cards.has(id)) return;
    try {
      add(await api.get(`/moments/${api.q(id)}`), false);
    } catch (error) {
      if (error.status === 404) remove(id);
    }
  }

  // What is shown is read, once the page is in view: each circle up to its newest post
  // here. And how many are new since the last visit, said once above the feed.
  let seenTimer = null;
  function seenSoon() {
    if (!seenTimer) seenTimer = setTimeout(seen, 100);
  }
  function seen() {
    seenTimer = null;
    if (stopped) return;
    const newest = new Map();
    let fresh = 0;
    for (const { moment } of cards.values()) {
      if (isNew(moment)) fresh += 1;
      const id = moment.circle.id;
      if (!newest.has(id) || newest.get(id).order < moment.order) newest.set(id, moment);
    }
    const total = Math.max(fresh, newAtOpen);
    news.textContent = total ? `${total} new since your last visit` : '';
    // The whole feed reads what its badge counts: circles, not chats (read in the chat,
    // as messengers do); a circle's own feed reads that circle, whatever it is.
    for (const [id, moment] of newest) {
      const circle = circleById(id);
      if (circle && (circleId || !isConversation(circle))) markRead(id, moment);
    }
  }

  function remove(id) {
    cards.get(id)?.el.remove();
    cards.delete(id);
  }

  // The circle is gone: say so once, ask nothing more.
  function circleGone() {
    missing = true;
    clearTimeout(retryTimer);
    retryTimer = null;
    cards.clear();
    list.replaceChildren();
    status.textContent = '';
    drawTop();
  }

  async function loadMore() {
    if (loading || pager.done || stopped || missing || retryTimer) return;
    loading = true;
    const mine = pager;
    let loaded = false;
    status.textContent = 'Loading…';
    try {
      const fresh = await mine.next();
      if (mine !== pager || stopped) return;
      backoff.reset();
      loaded = true;
      for (const moment of fresh) if (!cards.has(moment.id)) add(moment, false);
      status.textContent = pager.done && cards.size ? 'That is everything.' : '';
      if (!cards.size) status.textContent = circleId ? 'Nothing in this circle yet.' : 'No moments yet.';
      if (!window.p2pmFirstFeed) {
        window.p2pmFirstFeed = performance.now();
        performance.mark('p2pm-feed-rendered');
      }
    } catch (error) {
      if (mine !== pager || stopped) return;
      if (circleId && error.status === 404) {
        circleGone();
        return;
      }
      // Try again by itself, more and more slowly, for as long as this view is open.
      const wait = backoff.next();
      status.textContent = `${errorText(error)} Trying again in ${Math.round(wait / 1000)} s.`;
      retryTimer = setTimeout(() => {
        retryTimer = null;
        loadMore();
      }, wait);
    } finally {
      loading = false;
    }
    // Still room on the screen: fetch the next page now rather than wait for a scroll.
    if (loaded && !pager.done && sentinel.getBoundingClientRect().top < window.innerHeight * 2) loadMore();
  }

  function reload() {
    if (missing) return;
    clearTimeout(retryTimer);
    retryTimer = null;
    backoff.reset();
    pager = new Pager(pager.filter, pager.known);
    loading = false;
    cards.clear();
    list.replaceChildren();
    loadMore();
  }

  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }, { rootMargin: '800px 0px' });
  observer.observe(sentinel);

  const chunkRefresh = new Map();
  const offs = [
    on('moment.added', async (data) => {
      const album = !isConversation(circleById(data.circle) ?? {});
      if (data.kind === 'post' && (circleId ? data.circle === circleId : album) && !cards.has(data.id)) {
        try {
          add(await api.get(`/moments/${api.q(data.id)}`), true);
        } catch { /* expired or retracted meanwhile */ }
      } else if (data.reply_to) refresh(data.reply_to);
    }),
    on('moment.edited', (data) => refresh(data.id)),
    on('moment.retracted', (data) => {
      const card = cards.get(data.id);
      if (card) add({ ...card.moment, retracted: true, text: '', photos: [], files: [], comments: [], reactions: {} }, false);
    }),
    on('moment.expired', () => {
      const now = Date.now() / 1000;
      for (const [id, card] of cards) if (card.moment.expires && card.moment.expires <= now) remove(id);
    }),
    on('transfer.chunk', (data) => {
      const card = cards.get(data.moment);
      if (!card) return;
      const bar = card.el.querySelector('.arrival progress');
      if (bar) {
        bar.max = data.total;
        bar.value = data.held;
        card.el.querySelector('.arrival-text').textContent = arrivalText(data.held, data.total);
      }
      // Fetch the moment again now and then: each photo's thumbnail shows once it is here.
      if (!chunkRefresh.has(data.moment)) {
        chunkRefresh.set(data.moment, setTimeout(() => {
          chunkRefresh.delete(data.moment);
          refresh(data.moment);
        }, 300));
      }
    }),
    on('transfer.done', (data) => refresh(data.moment)),
    on('gap', reload),
    onChange((what) => {
      if (what === 'circles') {
        drawChips();
        drawRemovals();
        if (circleId && !circleById(circleId) && !missing) circleGone();
        else if (circleId && circleById(circleId) && missing) {
          missing = false; // it was only late to arrive
          drawTop();
          reload();
        } else drawTop();
      }
      if (what === 'friends') drawTop();
      if (what === 'circles' || what === 'friends' || what === 'unread') drawRail();
      if (what === 'unread') drawChips();
    }),
  ];

  drawChips();
  drawRemovals();
  drawTop();
  drawRail();
  loadMore();
  document.addEventListener('visibilitychange', seenSoon);
  return () => {
    stopped = true;
    clearTimeout(seenTimer);
    document.removeEventListener('visibilitychange', seenSoon);
    clearTimeout(retryTimer);
    observer.disconnect();
    for (const off of offs) off();
    for (const timer of chunkRefresh.values()) clearTimeout(timer);
  };
}

export function incomplete(moment) {
  return [...moment.photos, ...moment.files].some((b) => b.chunks_held < b.chunks);
}

function arrivalText(held, total) {
  return `Arriving from your circle… ${Math.floor((100 * held) / Math.max(total, 1))}%`;
}

/** One moment as a card. `refresh(id)` re-reads it after a change. */
export function momentCard(m, { refresh, fresh = false }) {
  const author = person(m.author);
  const mine = isMe(m.author);
  if (m.retracted) {
    return h('li', { class: 'moment retracted', dataset: { id: m.id, order: m.order } },
      h('p', {}, icon('trash'), `${mine ? 'You' : author.name} deleted a moment in ${m.circle.name} · `, timeEl(m.time)));
  }
  const headId = `m-${m.id.slice(0, 12)}`;
  const head = h('header', { class: 'moment-head' },
    avatar(m.author),
    h('div', { class: 'who' },
      h('span', { class: 'author', id: headId }, mine ? `${author.name} (you)` : author.name),
      h('span', { class: 'where' },
        h('a', { href: `#/feed/${encodeURIComponent(m.circle.id)}` }, m.circle.name),
        ' · ', timeEl(m.time),
        m.edited ? h('span', { class: 'edited', title: `Edited ${relativeTime(m.edited)}` }, ' · edited') : null,
        m.expires ? h('span', { class: 'expires', title: 'It will be deleted on every device' },
          ' · ', icon('clock'), ` gone ${untilTime(m.expires)}`) : null)),
    fresh ? h('span', { class: 'new-tag' }, 'New') : null,
    mine ? h('button', {
      type: 'button',
      class: 'icon-button edit-open',
      'aria-label': 'Edit the text of this moment',
      title: 'Edit',
      onclick: (e) => editText(e.currentTarget.closest('article'), m, refresh),
    }, icon('pencil')) : null,
    mine ? h('button', {
      type: 'button',
      class: 'icon-button',
      'aria-label': 'Delete this moment for everyone',
      title: 'Delete for everyone',
      onclick: async () => {
        const yes = await confirmDialog({
          title: 'Delete this moment for everyone?',
          text: `It disappears for everyone in ${m.circle.name}, on each of their devices. A small note says it was deleted.`,
          ok: 'Delete for everyone',
          danger: true,
        });
        if (!yes) return;
        try {
          await api.del(`/moments/${api.q(m.id)}`);
          refresh(m.id);
        } catch (error) {
          toast(errorText(error), 'error');
        }
      },
    }, icon('trash')) : null);

  const body = [];
  if (m.text) body.push(h('p', { class: 'text' }, m.text));
  if (m.photos.length) body.push(photoGrid(m));
  const arriving = [...m.photos, ...m.files].filter((b) => b.chunks_held < b.chunks);
  if (arriving.length) {
    const held = arriving.reduce((n, b) => n + b.chunks_held, 0);
    const total = arriving.reduce((n, b) => n + b.chunks, 0);
    body.push(h('div', { class: 'arrival' },
      h('progress', { max: total, value: held, 'aria-label': 'Photos and files arriving' }),
      h('span', { class: 'arrival-text' }, arrivalText(held, total))));
  }
  if (m.versions) body.push(newestFile(m, refresh));
  const rest = m.versions ? m.files.slice(1) : m.files; // the first: its versions, above
  for (const f of rest.filter(playable)) body.push(videoPlayer(m, f));
  const files = rest.filter((f) => !playable(f));
  if (files.length) {
    body.push(h('ul', { class: 'files' }, files.map((f) => {
      const here = f.chunks_held >= f.chunks;
      return h('li', {},
        here ? h('a', { href: api.urls.file(m.id, f.n), download: f.name }, icon('file'), h('span', {}, f.name))
          : h('span', { class: 'waiting' }, icon('file'), h('span', {}, f.name)),
        h('small', {}, here ? size(f.size) : `${size(f.size)} · arriving`));
    })));
  }

  return h('li', { class: `moment${fresh ? ' new' : ''}`, dataset: { id: m.id, order: m.order } },
    h('article', { 'aria-labelledby': headId },
      head, ...body, versionsPanel(m, refresh), reactionsBar(m, refresh), whoReacted(m), comments(m, refresh)));
}

export function photoGrid(m) {
  const count = m.photos.length;
  const grid = h('div', { class: `photos photos-${Math.min(count, 4)}` });
  const shown = m.photos.slice(0, 4);
  shown.forEach((photo, i) => {
    const here = photo.chunks_held >= photo.chunks;
    const label = `Photo ${i + 1} of ${count} from ${person(m.author).name}`;
    const img = h('img', { alt: label, loading: 'lazy', decoding: 'async', width: photo.width, height: photo.height });
    const tile = h('button', {
      type: 'button',
      class: 'photo loading',
      'aria-label': `Open ${label.toLowerCase()}`,
      onclick: () => openViewer(m, i),
    }, img);
    if (count === 1) tile.style.aspectRatio = `${Math.max(photo.width, 1)} / ${Math.max(photo.height, 1)}`;
    img.addEventListener('load', () => tile.classList.remove('loading'));
    img.addEventListener('error', () => tile.classList.add('waiting'));
    // The thumbnail travels with the photo; until its pieces are here it cannot be shown.
    img.src = api.urls.thumbnail(m.id, photo.n) + (here ? '' : `?try=${photo.chunks_held}`);
    if (i === 3 && count > 4) tile.append(h('span', { class: 'more-photos' }, `+${count - 4}`));
    grid.append(tile);
  });
  return grid;
}

function reactionsBar(m, refresh) {
  const bar = h('div', { class: 'reactions' });
  const mineName = state.me?.name;
  const byEmoji = m.reactions_by ?? null;
  for (const [emoji, names] of Object.entries(m.reactions)) {
    const people = byEmoji?.[emoji]?.map((p) => person(p).name) ?? names.map((p) => person(p).name);
    const reacted = byEmoji?.[emoji] ? byEmoji[emoji].some(isMe) : people.includes(mineName);
    bar.append(h('button', {
      type: 'button',
      class: `reaction${reacted ? ' mine' : ''}`,
      title: people.join(', '),
      'aria-pressed': reacted ? 'true' : 'false',
      onclick: () => { if (!reacted) react(m, emoji, refresh); },
    }, // Named by what it shows ("❤️ from Bob"): the count is said by the names.
    emojiEl(emoji), h('span', { class: 'visually-hidden' }, ` from ${people.join(', ')}`),
    h('span', { 'aria-hidden': 'true' }, String(people.length))));
  }
  const picker = h('div', { class: 'picker', hidden: true, role: 'group', 'aria-label': 'Reactions' },
    REACTIONS.map((emoji) => h('button', {
      type: 'button',
      class: 'emoji-button',
      'aria-label': `React with ${emoji}`,
      onclick: () => {
        picker.hidden = true;
        react(m, emoji, refresh);
      },
    }, emojiEl(emoji))));
  bar.append(h('div', { class: 'react-wrap' },
    h('button', {
      type: 'button',
      class: 'icon-button react-open',
      'aria-label': 'React',
      'aria-expanded': 'false',
      onclick: (e) => {
        picker.hidden = !picker.hidden;
        e.currentTarget.setAttribute('aria-expanded', String(!picker.hidden));
        if (!picker.hidden) picker.querySelector('button').focus();
      },
    }, icon('smile')), picker));
  picker.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      picker.hidden = true;
      bar.querySelector('.react-open').focus();
    }
  });
  return bar;
}

async function react(m, emoji, refresh) {
  try {
    await api.post(`/moments/${api.q(m.id)}/reactions`, { emoji });
    refresh(m.id);
  } catch (error) {
    toast(errorText(error), 'error');
  }
}

function comments(m, refresh) {
  const list = h('ul', { class: 'comments', 'aria-label': 'Comments' }, m.comments.map((c) => {
    const who = person(personOf(c.author));
    return h('li', { class: 'comment' },
      avatar(personOf(c.author), 's'),
      h('div', { class: 'bubble' },
        h('span', { class: 'author' }, who.name), ' ',
        h('span', { class: 'comment-text' }, c.text), ' ',
        timeEl(c.time)));
  }));
  const input = h('input', {
    type: 'text',
    name: 'comment',
    placeholder: 'Write a comment…',
    autocomplete: 'off',
    'aria-label': `Comment on ${person(m.author).name}'s moment`,
    required: true,
  });
  const counter = byteCounter(input, MAX_TEXT);
  const error = h('p', { class: 'form-error', role: 'alert' });
  const tooLong = 'A comment can be at most 16 KB.';
  input.addEventListener('input', () => {
    if (error.textContent === tooLong && !counter.over()) error.textContent = '';
  });
  const form = h('form', {
    class: 'comment-form',
    onsubmit: async (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      if (counter.over()) {
        error.textContent = tooLong;
        return;
      }
      error.textContent = '';
      input.disabled = true;
      try {
        await api.post(`/moments/${api.q(m.id)}/comments`, { text });
        input.value = '';
        counter.update();
        refresh(m.id);
      } catch (failure) {
        error.textContent = errorText(failure);
      } finally {
        input.disabled = false;
      }
    },
  }, avatar(state.me, 's'), input, counter.el,
  h('button', { type: 'submit', class: 'icon-button', 'aria-label': 'Send comment' }, icon('send')));
  return h('section', { class: 'discussion' }, m.comments.length ? list : null, form, error);
}

/** Edit my moment's text in place: every member sees the new text, marked edited. */
function editText(article, m, refresh) {
  if (article.querySelector('.edit-form')) return;
  const shown = article.querySelector(':scope > .text');
  const field = h('textarea', { name: 'text', rows: 3, 'aria-label': 'New text' });
  field.value = m.text;
  const counter = byteCounter(field, MAX_TEXT);
  const error = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', {
    class: 'edit-form',
    onsubmit: async (e) => {
      e.preventDefault();
      if (counter.over()) {
        error.textContent = 'A moment can be at most 16 KB.';
        return;
      }
      try {
        await api.patch(`/moments/${api.q(m.id)}`, { text: field.value });
        form.remove();
        refresh(m.id);
      } catch (failure) {
        error.textContent = errorText(failure);
      }
    },
  }, field, counter.el, error, h('div', { class: 'form-actions' },
    h('button', { type: 'button', class: 'button quiet small', onclick: () => { form.remove(); if (shown) shown.hidden = false; } }, 'Cancel'),
    h('button', { type: 'submit', class: 'button primary small' }, 'Save')));
  if (shown) shown.hidden = true;
  article.querySelector('.moment-head').after(form);
  field.focus();
}

/** Who reacted with what: a list of names per emoji, behind a small button. */
function whoReacted(m) {
  const byEmoji = Object.entries(m.reactions_by ?? {});
  if (!byEmoji.length) return null;
  const list = h('ul', { class: 'who-reacted', hidden: true, 'aria-label': 'Who reacted' },
    byEmoji.map(([emoji, people]) => h('li', {},
      h('span', { class: 'emoji' }, emoji), ' ', people.map((p) => (isMe(p) ? 'You' : person(p).name)).join(', '))));
  const toggle = h('button', {
    type: 'button',
    class: 'link-button who-reacted-open',
    'aria-expanded': 'false',
    onclick: () => {
      list.hidden = !list.hidden;
      toggle.setAttribute('aria-expanded', String(!list.hidden));
    },
  }, 'Who reacted');
  return h('div', { class: 'reacted' }, toggle, list);
}
