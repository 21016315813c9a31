// Waiting: a row's "Use for a test message" button fills that topic's test-message form with
// the row's key and a JSON value holding its correlatable key and value, and opens the form.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target.closest("[data-fill-form]") : null;
    if (!target) return;
    var dom = target.getAttribute("data-fill-form");
    var key = document.getElementById(dom + "-key");
    var value = document.getElementById(dom + "-value");
    var details = document.getElementById("send-" + dom);
    if (!key || !value) return;
    key.value = target.getAttribute("data-fill-key") || "";
    value.value = target.getAttribute("data-fill-value") || "{}";
    if (details) details.open = true;
    value.focus();
  });
})();
