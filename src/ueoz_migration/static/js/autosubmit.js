// Carry the signed login request to login.gov.pl without a click; the button remains for no-JS.
(function () {
  "use strict";
  var form = document.querySelector("form[data-auto-submit]");
  if (form) { form.submit(); }
})();
