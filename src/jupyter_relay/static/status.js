// The status page refreshes itself: every few seconds it asks its own URL again
// (which checks every backend anew) and swaps in the fresh #status. No framework:
// the page is written, and escaped, by the relay; this only moves it into place.
"use strict";
(function () {
  var every = Number(document.body.getAttribute("data-refresh-ms")) || 2000;
  var live = document.getElementById("live");

  function say(text) {
    if (live) live.textContent = text;
  }

  function refresh() {
    fetch(location.pathname, {
      headers: { Accept: "text/html" },
      cache: "no-store",
      credentials: "same-origin",
    })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("status");
        var old = document.getElementById("status");
        if (!fresh || !old) throw new Error("the answer has no status");
        old.replaceWith(document.adoptNode(fresh));
        say("Live: updated " + new Date().toLocaleTimeString() + ", every " + every / 1000 + " s.");
      })
      .catch(function (error) {
        say("Could not refresh (" + error.message + "); trying again. Reload if this lasts.");
      })
      .then(function () {
        setTimeout(refresh, every);
      });
  }

  say("Live: every " + every / 1000 + " s.");
  setTimeout(refresh, every);
})();
