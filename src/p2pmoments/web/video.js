// Videos in a moment: a file of type video/mp4 or video/webm that is here plays in the
// page. The daemon serves it as that type, in byte ranges, so the player seeks
// (spec/moments.md section 4.8). No poster is made when posting (that would need a
// video decoder in the daemon): preload="metadata" lets the browser show the first
// frame; until then the player is a plain dark box.

import * as api from './api.js';
import { h, icon, size } from './dom.js';

export const VIDEO_TYPES = new Set(['video/mp4', 'video/webm']);

/** Whether a file of a moment plays in the page: a video, wholly here. */
export const playable = (f) => VIDEO_TYPES.has(f.type) && f.chunks_held >= f.chunks;

/** A player for the file `f` of the moment `m`, with its name and a download link. */
export function videoPlayer(m, f) {
  const url = api.urls.file(m.id, f.n);
  return h('figure', { class: 'video' },
    h('video', {
      controls: true, preload: 'metadata', playsInline: true, src: url, 'aria-label': `Video: ${f.name}`,
    }),
    h('figcaption', {},
      h('span', {}, f.name), h('small', {}, size(f.size)),
      h('a', { href: url, download: f.name, 'aria-label': `Download ${f.name}` }, icon('download'))));
}
