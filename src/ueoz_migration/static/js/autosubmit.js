// Send a form on without a click (to login.gov.pl, or back from it to this site); the button remains for no-JS.
(function () {
  "use strict";
  var form = document.querySelector("form[data-auto-submit]");
  if (form) { form.submit(); }
})();
