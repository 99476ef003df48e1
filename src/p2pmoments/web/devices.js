// Me → Devices: your devices (spec/devices.md), linking a new one by a QR code or its
// link, renaming and revoking one; the recovery sheet (section 5): made once, or on a
// device recovered from one, revoking the lost devices. Every device runs its own daemon
// with keys of its own.

import * as api from './api.js';
import { append, clear, errorText, h, toast } from './dom.js';
import { on } from './live.js';

export function devicesCard() {
  const card = h('section', { class: 'card', 'aria-labelledby': 'devices-title' });
  const list = h('ul', { class: 'rows', 'aria-label': 'Your devices' });
  const linking = h('div', { class: 'device-link' });
  const asking = h('ul', { class: 'rows', 'aria-label': 'Devices asking to be linked' });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const recovery = h('div', { class: 'recovery', role: 'group', 'aria-labelledby': 'recovery-title' });
  let picture = null;
  let sheetFile = null;

  function forgetPicture() {
    if (picture) URL.revokeObjectURL(picture);
    if (sheetFile) URL.revokeObjectURL(sheetFile);
    picture = sheetFile = null;
  }

  async function drawRecovery() {
    let status;
    try {
      status = await api.get('/recovery');
    } catch (failure) {
      clear(recovery, h('p', {}, errorText(failure)));
      return;
    }
    if (recovery.dataset.sheet) return; // the sheet is on screen: leave it until reload
    const title = h('h3', { id: 'recovery-title' }, 'Recovery');
    if (status.recovering) {
      clear(recovery, title,
        h('p', {}, `This device was made from your recovery sheet. Back so far: ${status.friends} friend(s), ${status.circles} circle(s); they come back as your friends’ devices connect.`),
        h('p', { class: 'muted' }, `Once everything is back, revoke the devices you lost (${status.devices.join(', ') || 'none known yet'}).`),
        h('button', { type: 'button', class: 'button danger', onclick: revokeLost }, 'Revoke my other devices'));
    } else if (status.can_make) {
      clear(recovery, title,
        h('p', {}, 'If you lose every device, a recovery sheet gives you back your friends and circles on a new machine. Make it once, and keep it on paper or a USB stick.'),
        h('button', { type: 'button', class: 'button', onclick: makeSheet }, 'Make a recovery sheet'));
    } else if (status.set) {
      clear(recovery, title, h('p', { class: 'muted', dataset: { recovery: 'set' } }, 'You have a recovery sheet. Keep it safe: it is shown only when it is made.'));
    } else {
      clear(recovery, title, h('p', { class: 'muted' }, 'Make your recovery sheet on your first device.'));
    }
  }

  async function makeSheet() {
    error.textContent = '';
    try {
      const answer = await api.post('/recovery');
      forgetPicture();
      sheetFile = URL.createObjectURL(new Blob([answer.sheet + '\n'], { type: 'text/plain' }));
      recovery.dataset.sheet = 'shown';
      clear(recovery, h('h3', { id: 'recovery-title' }, 'Your recovery sheet'),
        h('pre', { class: 'sheet', dataset: { sheet: answer.sheet } }, answer.lines.join('\n')),
        h('p', {}, h('a', { href: sheetFile, download: 'p2pmoments-recovery-sheet.txt', class: 'button' }, 'Save it as a file')),
        h('p', {}, 'Write it down or save it now: it is shown this once and kept on no device. Whoever holds it can be you, so keep it where you keep a passport.'),
        h('p', { class: 'muted' }, 'On a new machine: p2pmoments --home DIR recover FILE, then p2pmoments --home DIR run.'));
    } catch (failure) {
      error.textContent = errorText(failure);
    }
  }

  async function revokeLost() {
    if (!window.confirm('Revoke every other device of yours? They receive nothing new, and nothing they sign from now on counts as yours.')) return;
    error.textContent = '';
    try {
      const answer = await api.post('/recovery/revoke');
      toast(answer.revoked.length ? `Revoked: ${answer.revoked.join(', ')}.` : 'Nothing to revoke.');
      await draw();
    } catch (failure) {
      error.textContent = errorText(failure);
    }
  }

  async function draw() {
    try {
      const { devices, requests = [] } = await api.get('/devices');
      clear(list, ...devices.map(row));
      clear(asking, ...requests.map(request));
    } catch (failure) {
      clear(list, h('li', {}, errorText(failure)));
    }
    await drawRecovery();
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

  // A device that used our link waits until the person checks that it shows the same
  // 6 digits (spec/devices.md section 10): one that does not was linked by someone else.
  function request(r) {
    const digits = `${r.code.slice(0, 3)} ${r.code.slice(3)}`;
    return h('li', { class: 'row', dataset: { joinCode: r.code } },
      h('div', { class: 'row-main' },
        h('strong', {}, `Link ${r.name}?`),
        h('span', {}, ` It should show the code ${digits}.`),
        h('span', { class: 'muted' }, ' Other digits: someone else used your link, refuse it.')),
      h('button', { type: 'button', class: 'button small', onclick: () => decide(r, true) }, 'Link it'),
      h('button', { type: 'button', class: 'button quiet small danger', onclick: () => decide(r, false) }, 'Refuse'));
  }

  async function decide(r, link) {
    error.textContent = '';
    try {
      if (link) await api.post(`/devices/requests/${api.q(r.code)}`);
      else await api.del(`/devices/requests/${api.q(r.code)}`);
      if (!link) toast(`${r.name} is refused. Make a fresh link for the device you meant.`);
      await draw();
    } catch (failure) {
      error.textContent = errorText(failure);
    }
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
        h('p', { class: 'muted' }, 'Show it to no one else: it makes a device yours. The new device shows 6 digits: once it is running, this page asks you to confirm them.'));
    } catch (failure) {
      error.textContent = errorText(failure);
    }
  }

  append(card,
    h('h2', { id: 'devices-title' }, 'Devices'),
    h('p', { class: 'muted' }, 'Each of your devices has keys of its own and acts as you: friends see one of you.'),
    list,
    asking,
    h('button', { type: 'button', class: 'button', onclick: showLink }, 'Link a device'),
    linking,
    recovery,
    error);
  draw();
  const offs = [
    on('devices.changed', draw),
    on('device.join_requested', draw),
    on('device.linked', () => { clear(linking); toast('A new device of yours is linked.'); draw(); }),
    on('peer.connected', draw),
    on('peer.disconnected', draw),
  ];
  return { card, close: () => { forgetPicture(); for (const off of offs) off(); } };
}
