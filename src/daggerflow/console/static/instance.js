// The instance and template pages: the node details panel that a graph node opens, ages
// that keep counting between live updates, and JSON fields checked before a dialog submits.
// Loaded with <script src> (the Content-Security-Policy allows no inline script).
(function () {
  "use strict";

  // A graph node links to "#<panel id>": show that panel and mark the node. Live updates
  // replace the graph and the panels, so the choice is applied again after each swap.
  function select() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    var panel = id ? document.getElementById(id) : null;
    if (panel && !panel.classList.contains("node-panel")) panel = null;
    document.querySelectorAll(".node-panel.selected").forEach(function (p) {
      if (p !== panel) p.classList.remove("selected");
    });
    document.querySelectorAll("[data-node-link].selected").forEach(function (a) {
      if (!panel || a.getAttribute("data-node-link") !== id) a.classList.remove("selected");
    });
    if (!panel) return;
    panel.classList.add("selected");
    document.querySelectorAll("svg [data-node-link]").forEach(function (a) {
      if (a.getAttribute("data-node-link") === id) a.classList.add("selected");
    });
  }

  function focusPanel() {
    select();
    var id = decodeURIComponent(window.location.hash.slice(1));
    var panel = id ? document.getElementById(id) : null;
    if (panel && panel.classList.contains("node-panel")) panel.focus({ preventScroll: true });
  }

  // The same words as the server's duration filter.
  function duration(s) {
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 60) return s.toFixed(1) + " s";
    var m = Math.floor(s / 60), sec = Math.floor(s % 60);
    if (m < 60) return m + "m " + (sec < 10 ? "0" : "") + sec + "s";
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 48) return h + "h " + (m < 10 ? "0" : "") + m + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("time[data-since]").forEach(function (t) {
      var since = parseFloat(t.getAttribute("data-since"));
      if (since > 0) t.textContent = duration(Math.max(0, now - since));
    });
  }

  // A textarea marked data-json-object must hold a JSON object (or be empty when optional).
  function checkJson(area) {
    var text = area.value.trim();
    var message = "";
    if (text) {
      try {
        var value = JSON.parse(text);
        if (value === null || typeof value !== "object" || Array.isArray(value)) {
          message = "Enter a JSON object, such as {\"card\": \"ok\"}.";
        }
      } catch (e) {
        message = "This is not valid JSON: " + e.message;
      }
    }
    area.setCustomValidity(message);
    area.setAttribute("aria-invalid", message ? "true" : "false");
    var out = document.getElementById(area.getAttribute("aria-describedby") || "");
    if (out) out.textContent = message;
  }

  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target instanceof HTMLTextAreaElement && target.hasAttribute("data-json-object")) checkJson(target);
  });

  // Following the link would scroll the page to the panel; the panel sits beside the graph,
  // so the choice goes into the URL (a shareable link) without the jump.
  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    var link = target && target.closest("[data-node-link]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    window.history.replaceState(null, "", "#" + link.getAttribute("data-node-link"));
    select();
  });
  window.addEventListener("hashchange", focusPanel);
  document.addEventListener("DOMContentLoaded", function () {
    select();
    tick();
    window.setInterval(tick, 1000);
  });
  document.addEventListener("htmx:sseMessage", function () { select(); tick(); });
  document.addEventListener("htmx:afterSettle", select);
})();
