// Keeps the marked parts of a console page current without a reload: every
// element with data-refresh="URL" is replaced by what URL answers (HTML rendered
// and escaped by the server), every data-every milliseconds. First-party, no
// library; the Content-Security-Policy allows no other script.
"use strict";

function refresh(element) {
  const url = element.dataset.refresh;
  const every = Math.max(500, Number(element.dataset.every) || 2000);
  let busy = false;
  const tick = async () => {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    try {
      const answer = await fetch(url, {
        credentials: "same-origin",
        headers: { "x-console-fragment": "1" },
        cache: "no-store",
      });
      if (answer.status === 401) {
        window.location.assign("/sign-in?next=" + encodeURIComponent(window.location.pathname));
        return;
      }
      if (answer.ok) {
        const html = await answer.text();
        if (html !== element.dataset.last) {
          element.dataset.last = html;
          // Keep what an operator is typing: skip the swap while a field inside has focus.
          if (!element.contains(document.activeElement)) {
            element.innerHTML = html;
          }
        }
      }
    } catch (error) {
      // The console or the network is away for a moment: the next tick tries again.
    } finally {
      busy = false;
    }
  };
  window.setInterval(tick, every);
}

document.querySelectorAll("[data-refresh]").forEach(refresh);
