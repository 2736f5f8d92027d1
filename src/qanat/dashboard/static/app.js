// qanat dashboard: live updates without reloading.
// Every element marked data-live is re-read from the server about every 0.8 s (while
// the tab is visible) and replaced by the same element of a fresh rendering of this
// page. The HTML comes from our own server, escaped there; it is parsed inertly by
// DOMParser (its scripts never run) and only our regions are swapped in. When the
// server is gone (a restart) the indicator says so and polling goes on until it is back.
(function () {
  "use strict";
  var PERIOD = 800;
  var state = document.getElementById("live-state");
  var busy = false;

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
    busy = true;
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
    });
  }

  window.setInterval(refresh, PERIOD);
  document.addEventListener("visibilitychange", refresh);
})();
