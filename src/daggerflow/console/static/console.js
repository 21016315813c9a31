// The console's own script: the light/dark switch, confirmation dialogs, and small helpers.
// Loaded from the console's static files only (the Content-Security-Policy allows no inline
// script), before the page is parsed so that the theme applies without a flash.
(function () {
  "use strict";
  var KEY = "daggerflow-theme";
  var root = document.documentElement;

  function stored() {
    try { return localStorage.getItem(KEY); } catch (e) { return null; }
  }
  function apply(theme) {
    root.dataset.theme = theme === "light" || theme === "dark" ? theme : "auto";
  }
  apply(stored());

  function effective() {
    if (root.dataset.theme !== "auto") return root.dataset.theme;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    var toggle = target.closest("[data-theme-toggle]");
    if (toggle) {
      var next = effective() === "dark" ? "light" : "dark";
      apply(next);
      try { localStorage.setItem(KEY, next); } catch (e) { /* private mode: this page only */ }
      return;
    }
    var opener = target.closest("[data-dialog-open]");
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-dialog-open"));
      if (dialog && typeof dialog.showModal === "function") dialog.showModal();
      return;
    }
    var closer = target.closest("[data-dialog-close]");
    if (closer) {
      var open = closer.closest("dialog");
      if (open) open.close();
      return;
    }
    var copy = target.closest("[data-copy]");
    if (copy && navigator.clipboard) {
      navigator.clipboard.writeText(copy.getAttribute("data-copy"));
    }
  });

  // A select or checkbox marked data-autosubmit submits its form (filters apply at once).
  document.addEventListener("change", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (target && target.matches("[data-autosubmit]") && target.form) target.form.requestSubmit();
  });

  // A live part is not swapped while one of its dialogs is open: the swap would close it
  // under the user's hand. The next change that arrives after it closes is shown.
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var element = event.target;
    if (element instanceof Element && element.querySelector("dialog[open]")) event.preventDefault();
  });
})();
