// The searching screen updates by itself: ask for the attempt's state, reload when it changes.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main || !main.dataset.statusUrl) { return; }
  var url = main.dataset.statusUrl;
  var shown = main.dataset.state;
  // Most searches end within a second: ask soon, then less and less often (the status
  // answer is one indexed read, but a search that takes minutes need not be asked twice a
  // second).
  var delay = 500;
  var longest = 2000;

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : { state: null }; })
      .then(function (body) {
        if (body.state !== shown) {
          window.location.reload();
          return;
        }
        delay = Math.min(delay * 1.5, longest);
        window.setTimeout(poll, delay);
      })
      .catch(function () {
        delay = Math.min(delay * 2, 30000);  // the service is busy or the network is down
        window.setTimeout(poll, delay);
      });
  }
  window.setTimeout(poll, delay);
})();
