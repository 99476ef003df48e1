// The reaction emoji as pictures the daemon serves (Twemoji, CC-BY 4.0), so that they
// show where the system has no emoji font; any other emoji is drawn as text.

import { h } from './dom.js';

const FILES = {
  '❤️': '2764', '❤': '2764', '😂': '1f602', '🎉': '1f389', '👍': '1f44d', '😮': '1f62e', '😢': '1f622',
};

/** An emoji as a picture where one is served, else as text. */
export function emojiEl(text) {
  const code = FILES[text];
  if (!code) return h('span', { class: 'emoji' }, text);
  return h('img', {
    class: 'emoji', alt: text, width: 20, height: 20, draggable: false,
    src: new URL(`./emoji/${code}.svg`, import.meta.url).href,
  });
}
