// Me → Chats and notifications: read receipts (kept by the daemon: they change what
// others see) and this browser's notifications (issue 20, items 3 and 5).

import * as api from './api.js';
import { clear, errorText, h, toast } from './dom.js';
import {
  enabled, supported, turnOff, turnOn,
} from './notify.js';

export function settingsCard() {
  const card = h('section', { class: 'card settings', 'aria-labelledby': 'settings-title' });
  const receipts = h('input', {
    type: 'checkbox',
    name: 'read_receipts',
    disabled: true,
    onchange: async (e) => {
      const on = e.target.checked;
      e.target.disabled = true;
      try {
        const answer = await api.patch('/settings', { read_receipts: on });
        e.target.checked = answer.read_receipts;
      } catch (error) {
        e.target.checked = !on;
        toast(errorText(error), 'error');
      } finally {
        e.target.disabled = false;
      }
    },
  });
  const notes = h('div', { class: 'notify-setting' });

  function drawNotes() {
    let said;
    let action = null;
    if (!supported()) said = 'This browser cannot show notifications.';
    else if (Notification.permission === 'denied') said = 'Notifications are blocked for Moments in this browser’s site settings.';
    else if (enabled()) {
      said = 'On: new messages, moments and comments on yours, unless you are looking at them. Mute a chat or a circle from its page.';
      action = h('button', { type: 'button', class: 'button small', onclick: () => { turnOff(); drawNotes(); } }, 'Turn off notifications');
    } else {
      said = 'Off.';
      action = h('button', { type: 'button', class: 'button small', onclick: async () => { await turnOn(); drawNotes(); } }, 'Turn on notifications');
    }
    clear(notes, h('h3', {}, 'Notifications in this browser'), h('p', { class: 'muted' }, said), action);
  }

  clear(card, h('h2', { id: 'settings-title' }, 'Chats and notifications'),
    h('label', { class: 'switch' }, receipts, h('span', {}, 'Send read receipts')),
    h('p', { class: 'muted' }, 'When on, the people in your chats see when you have read their messages (two blue ticks). Off unless you turn it on.'),
    notes);
  drawNotes();
  api.get('/settings').then((s) => {
    receipts.checked = s.read_receipts;
    receipts.disabled = false;
  }).catch(() => {});
  return card;
}
