// Circles: make one by ticking friends; rename, add and remove members, who may
// post, delete. Removing someone says plainly what they keep.

import * as api from './api.js';
import {
  append, avatar, clear, confirmDialog, count, empty, errorText, h, icon, promptDialog, relativeTime,
  toast,
} from './dom.js';
import {
  albums, canPost, circleById, isConversation, onChange, others, state, unreadIn,
} from './state.js';
import { muteButton } from './notify.js';

function friendPicker(friends, name) {
  return h('fieldset', { class: 'picker-list' },
    h('legend', {}, 'Who is in it'),
    friends.length ? friends.map((f) => h('label', { class: 'pick' },
      h('input', { type: 'checkbox', name, value: f.identity }),
      avatar(f, 's'),
      h('span', {}, f.name),
      f.connected ? h('span', { class: 'dot online', title: 'Online', role: 'img', 'aria-label': 'online' }) : null))
      : h('p', { class: 'muted' }, 'No friends to add. ', h('a', { href: '#/pair' }, 'Add a friend'), ' first.'));
}

function ticked(form, name) {
  return [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);
}

function createForm() {
  const name = h('input', { type: 'text', name: 'name', required: true, maxLength: 32, placeholder: 'family, the pub, work…', autocomplete: 'off' });
  // Everyone may post unless the owner says otherwise: a circle is most often a shared
  // album (the family, the pub), as shared albums and groups are (README, "Who may post").
  const everyone = h('input', { type: 'checkbox', name: 'members_can_post', checked: true });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const friends = state.friends.filter((f) => f.state === 'friend');
  const form = h('form', {
    class: 'card create-circle',
    'aria-labelledby': 'new-circle',
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = '';
      try {
        const circle = await api.post('/circles', {
          name: name.value.trim(),
          members: ticked(form, 'member'),
          members_can_post: everyone.checked,
        });
        toast(`Made the circle ${circle.name}.`);
        location.hash = `#/circle/${encodeURIComponent(circle.id)}`;
      } catch (failure) {
        error.textContent = errorText(failure);
      }
    },
  },
  h('h2', { id: 'new-circle' }, 'Make a circle'),
  h('label', { class: 'field' }, h('span', {}, 'Name'), name),
  friendPicker(friends, 'member'),
  h('label', { class: 'switch' }, everyone, h('span', {}, 'Everyone in it may post (not only you)')),
  error,
  h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'button primary' }, 'Make the circle')));
  return form;
}

function circleRow(c) {
  const people = others(c);
  return h('li', {},
    h('a', { class: 'row-link', href: `#/circle/${encodeURIComponent(c.id)}` },
      h('span', { class: 'stack' }, people.slice(0, 4).map((m) => avatar(m, 's'))),
      h('span', { class: 'row-main' },
        h('strong', {}, c.name),
        h('small', {}, `${c.members.length} ${c.members.length === 1 ? 'member' : 'members'} · `,
          c.mine ? 'yours' : `${c.owner.name}'s`,
          c.members_can_post ? ' · everyone posts' : '',
          c.removed ? ' · you were removed' : '')),
      count(unreadIn(c.id)),
      icon('right')));
}

export function circlesView(root) {
  const list = h('ul', { class: 'rows card', 'aria-label': 'Your circles' });
  const draw = () => {
    clear(list, albums().map(circleRow));
    list.hidden = !albums().length;
  };
  append(root, h('h1', { class: 'view-title' }, 'Circles'), list, createForm());
  if (!albums().length) list.before(empty('No circles yet', 'Make one below: tick the friends who should see what you post to it.'));
  draw();
  return onChange((what) => { if (what === 'circles' || what === 'unread') draw(); });
}

export function circleView(root, [id]) {
  const draw = () => {
    const c = circleById(id);
    clear(root);
    if (!c) {
      append(root, empty('This circle no longer exists', 'It was deleted, so there is nothing more to see here.', h('a', { class: 'button', href: '#/circles' }, 'All circles')));
      return;
    }
    const change = async (body, done) => {
      try {
        await api.patch(`/circles/${api.q(c.id)}`, body);
        if (done) toast(done);
      } catch (error) {
        toast(errorText(error), 'error');
      }
    };
    // Removed: she is not one of them any more, whatever the last manifest she got says.
    const listed = c.removed ? c.members.filter((m) => m.identity !== state.me?.identity) : c.members;
    const members = h('ul', { class: 'rows card', 'aria-label': 'Members' }, listed.map((m) => {
      const me = m.identity === state.me?.identity;
      return h('li', { class: 'row' },
        avatar(m, 's'),
        h('span', { class: 'row-main' }, h('strong', {}, me ? `${m.name} (you)` : m.name),
          m.identity === c.owner.identity ? h('small', {}, 'owner') : null),
        c.mine && !me ? h('button', {
          type: 'button',
          class: 'button quiet small',
          onclick: async () => {
            const yes = await confirmDialog({
              title: `Remove ${m.name} from ${c.name}?`,
              text: [`${m.name} keeps what they already received from this circle, and gets nothing new from now on.`,
                'The circle gets a new key that only the others hold.'],
              ok: `Remove ${m.name}`,
              danger: true,
            });
            if (yes) change({ remove: [m.identity] }, `${m.name} is no longer in ${c.name}.`);
          },
        }, 'Remove') : null);
    }));
    const outside = state.friends.filter((f) => f.state === 'friend' && !c.members.some((m) => m.identity === f.identity));
    const addForm = c.mine && outside.length ? h('form', {
      class: 'card',
      onsubmit: (e) => {
        e.preventDefault();
        const chosen = ticked(e.currentTarget, 'add');
        if (chosen.length) change({ add: chosen }, 'Added. They see what is posted from now on.');
      },
    }, friendPicker(outside, 'add'), h('p', { class: 'muted' }, 'New members see what is posted from now on.'),
    h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'button' }, 'Add to the circle'))) : null;
    const everyone = h('input', {
      type: 'checkbox',
      checked: c.members_can_post,
      disabled: !c.mine,
      onchange: (e) => change({ members_can_post: e.target.checked }),
    });
    append(root,
      h('p', { class: 'crumbs' }, h('a', { href: '#/circles' }, icon('back'), 'Circles')),
      h('div', { class: 'view-head' },
        h('h1', { class: 'view-title' }, c.name),
        c.mine ? h('button', {
          type: 'button',
          class: 'button quiet small',
          onclick: async () => {
            const name = await promptDialog({ title: 'Rename the circle', label: 'Name', value: c.name });
            if (name) change({ name }, `Renamed to ${name}.`);
          },
        }, 'Rename') : null),
      h('p', { class: 'muted' }, c.mine ? 'Your circle.' : `${c.owner.name}'s circle.`,
        ' Only its members can read what is posted to it.'),
      c.removed ? h('div', { class: 'notice', role: 'note' },
        h('h2', {}, `You are no longer a member of ${c.name}`),
        h('p', {}, `${c.owner.name} removed you ${relativeTime(c.removed.at)}. `,
          'You keep what you received; nothing new reaches you, and you cannot post here.')) : null,
      h('div', { class: 'button-row' },
        h('a', { class: 'button', href: `#/feed/${encodeURIComponent(c.id)}` }, 'See its moments'),
        h('a', { class: 'button', href: `#/gallery/${encodeURIComponent(c.id)}` }, 'See its photos'),
        h('a', { class: 'button', href: `#/notes/${encodeURIComponent(c.id)}` }, 'Notes'),
        canPost(c) && isConversation(c) ? h('a', { class: 'button', href: `#/chat/${encodeURIComponent(c.id)}` }, 'Open as a chat') : null,
        c.removed ? null : muteButton(c.id)),
      c.removed || isConversation(c) ? null : h('label', { class: 'switch card' }, everyone, h('span', {}, 'Everyone in it may post', c.mine ? '' : ' (only the owner can change this)')),
      h('h2', {}, c.removed ? `Its members when you were removed (${listed.length})` : `Members (${c.members.length})`),
      members,
      addForm,
      h('div', { class: 'danger-zone' }, h('button', {
        type: 'button',
        class: 'button danger',
        onclick: async () => {
          const yes = await confirmDialog({
            title: c.removed ? `Forget ${c.name}?` : `Delete ${c.name}?`,
            text: c.mine ? 'Its moments are deleted from this device. Members keep what they already have.'
              : 'You forget this circle and its moments on this device.',
            ok: c.removed ? 'Forget' : 'Delete',
            danger: true,
          });
          if (!yes) return;
          try {
            await api.del(`/circles/${api.q(c.id)}`);
            toast(c.removed ? `Forgot ${c.name}.` : `Deleted ${c.name}.`);
            location.hash = '#/circles';
          } catch (error) {
            toast(errorText(error), 'error');
          }
        },
      }, c.removed ? 'Forget this circle and what you received' : 'Delete this circle')));
  };
  draw();
  return onChange((what) => { if (what === 'circles') draw(); });
}
