// Me → Devices: your devices (spec/devices.md), linking a new one by a QR code or its
// link, renaming and revoking one. Every device runs its own daemon with keys of its own.

import * as api from './api.js';
import { append, clear, errorText, h, toast } from './dom.js';
import { on } from './live.js';

export function devicesCard() {
  const card = h('section', { class: 'card', 'aria-labelledby': 'devices-title' });
  const list = h('ul', { class: 'rows', 'aria-label': 'Your devices' });
  const linking = h('div', { class: 'device-link' });
  const error = h('p', { class: 'form-error', role: 'alert' });
  let picture = null;

  function forgetPicture() {
    if (picture) URL.revokeObjectURL(picture);
    picture = null;
  }

  async function draw() {
    try {
      const { devices } = await api.get('/devices');
      clear(list, ...devices.map(row));
    } catch (failure) {
      clear(list, h('li', {}, errorText(failure)));
    }
  }

  function row(device) {
    const where = device.this ? 'the one you are using' : (device.linked ? 'connected' : 'not connected now');
    const actions = device.this ? [] : [
      h('button', { type: 'button', class: 'button quiet small', onclick: () => rename(device) }, 'Rename'),
      h('button', { type: 'button', class: 'button quiet small danger', onclick: () => revoke(device) }, 'Revoke'),
    ];
    return h('li', { class: 'row', dataset: { device: device.name } },
      h('div', { class: 'row-main' }, h('strong', {}, device.name), h('span', { class: 'muted' }, ` · ${where}`)),
      ...actions);
  }

  async function rename(device) {
    const name = window.prompt(`A new name for ${device.name}`, device.name);
    if (!name || name.trim() === device.name) return;
    error.textContent = '';
    try {
      await api.patch(`/devices/${api.q(device.name)}`, { name: name.trim() });
      await draw();
    } catch (failure) {
      error.textContent = errorText(failure);
    }
  }

  async function revoke(device) {
    const sure = window.confirm(
      `Revoke ${device.name}? From now on it receives nothing new from you, your friends or ` +
      'your circles, and nothing it posts counts as yours. What it already has, it keeps.');
    if (!sure) return;
    error.textContent = '';
    try {
      await api.post(`/devices/${api.q(device.name)}/revoke`);
      toast(`${device.name} is revoked.`);
      await draw();
    } catch (failure) {
      error.textContent = errorText(failure);
    }
  }

  async function showLink() {
    error.textContent = '';
    try {
      const answer = await api.post('/devices/link');
      forgetPicture();
      picture = URL.createObjectURL(new Blob([answer.svg], { type: 'image/svg+xml' }));
      const until = new Date(answer.expires_at * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      clear(linking,
        h('div', { class: 'qr-frame' }, h('img', { class: 'qr', src: picture, alt: 'A code that makes a new device yours', width: 240, height: 240 })),
        h('p', {}, `On the new device, instead of creating an identity, run this (it works once, until ${until}):`),
        h('label', { class: 'field' }, h('span', {}, 'Device link'),
          h('input', { type: 'text', readOnly: true, value: `p2pmoments devices join ${answer.link}`, dataset: { deviceLink: answer.link } })),
        h('p', { class: 'muted' }, 'Show it to no one else: it makes a device yours.'));
    } catch (failure) {
      error.textContent = errorText(failure);
    }
  }

  append(card,
    h('h2', { id: 'devices-title' }, 'Devices'),
    h('p', { class: 'muted' }, 'Each of your devices has keys of its own and acts as you: friends see one of you.'),
    list,
    h('button', { type: 'button', class: 'button', onclick: showLink }, 'Link a device'),
    linking,
    error);
  draw();
  const offs = [
    on('devices.changed', draw),
    on('device.linked', () => { clear(linking); toast('A new device of yours is linked.'); draw(); }),
    on('peer.connected', draw),
    on('peer.disconnected', draw),
  ];
  return { card, close: () => { forgetPicture(); for (const off of offs) off(); } };
}
