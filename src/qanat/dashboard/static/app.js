// qanat dashboard: live updates without reloading.
// Every element marked data-live is re-read from the server about every 0.8 s (while
// the tab is visible) and replaced by the same element of a fresh rendering of this
// page. The HTML comes from our own server, escaped there; it is parsed inertly by
// DOMParser (its scripts never run) and only our regions are swapped in. When the
// server is gone (a restart) the indicator says so and polling goes on until it is back.
// A page that takes long to render (counts over a huge store) is polled less often:
// the next poll waits at least three times as long as the last answer took.
(function () {
  "use strict";
  var PERIOD = 700;
  var state = document.getElementById("live-state");
  var busy = false;
  var last = 0;       // when the previous poll ended (ms)
  var took = 0;       // how long it took (ms)

  function mark(ok) {
    if (!state) return;
    state.textContent = ok ? "live" : "reconnecting…";
    state.className = ok ? "live" : "live down";
  }

  function regions(doc) {
    var out = {};
    var found = doc.querySelectorAll("[data-live][id]");
    for (var i = 0; i < found.length; i++) out[found[i].id] = found[i];
    return out;
  }

  function refresh() {
    if (busy || document.hidden) return;
    if (!document.querySelector("[data-live][id]")) return;
    if (Date.now() - last < Math.max(PERIOD, 3 * took)) return;
    busy = true;
    var began = Date.now();
    fetch(window.location.href, {
      headers: { "X-Qanat-Live": "1", "Accept": "text/html" },
      credentials: "same-origin",
      redirect: "error",
      cache: "no-store"
    }).then(function (response) {
      if (!response.ok && response.status !== 400) throw new Error(String(response.status));
      return response.text();
    }).then(function (html) {
      var fresh = regions(new DOMParser().parseFromString(html, "text/html"));
      var old = regions(document);
      Object.keys(old).forEach(function (id) {
        var next = fresh[id];
        if (next && next.innerHTML !== old[id].innerHTML) {
          old[id].replaceWith(document.importNode(next, true));
        }
      });
      mark(true);
    }).catch(function () {
      mark(false);
    }).then(function () {
      busy = false;
      last = Date.now();
      took = last - began;
    });
  }

  window.setInterval(refresh, PERIOD / 4);
  document.addEventListener("visibilitychange", refresh);
})();
