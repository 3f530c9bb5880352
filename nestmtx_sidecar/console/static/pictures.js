// Event pictures: an <img> cannot send the bearer token, so each picture is fetched with it
// once and shown from a blob: URL; the newest are kept, older blob URLs revoked.

import { getBlobUrl } from './api.js';
import { el } from './dom.js';

const PICTURES_KEPT = 50; // blob URLs hold the JPEG in memory: the newest only

export class Pictures {
  constructor(session) {
    this.session = session;
    this.urls = new Map();
  }

  url(path) {
    if (!this.urls.has(path)) {
      this.urls.set(path, getBlobUrl(path, this.session));
      while (this.urls.size > PICTURES_KEPT) {
        const [oldest, url] = this.urls.entries().next().value;
        this.urls.delete(oldest);
        url.then((u) => URL.revokeObjectURL(u), () => {});
      }
    }
    return this.urls.get(path);
  }

  // An <img> that fills in when the picture arrives (and says so if it cannot).
  image(path, alt) {
    const img = el('img', { className: 'event-picture', alt, width: 160 });
    this.url(path).then((url) => { img.src = url; },
      () => { img.alt = `${alt} (not available)`; });
    return img;
  }
}
