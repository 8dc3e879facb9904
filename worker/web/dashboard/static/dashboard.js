// The dashboard's one script: ours, no library, no build step, loaded from 'self' under the
// strict Content-Security-Policy. Every page works without it (plain links and forms);
// with it:
// - the regions of a page marked data-live refresh themselves: the page is fetched again
//   every few seconds (2, 5 or 15, or off: the header's "Refresh" choice, kept in
//   localStorage) while the tab is visible, and each region is swapped for its new HTML,
//   unless the cursor is in it;
// - a JSON field (textarea[data-json]) is checked before its form is sent, and the error
//   is shown beside it;
// - a select[data-autosubmit] sends its (GET) form when it changes.
(function () {
  "use strict";

  var KEY = "dashboard-refresh-s";
  var main = document.querySelector("main[data-refresh]");
  var control = document.getElementById("live-control");
  var stamp = document.getElementById("live-stamp");
  var timer = null;

  function seconds() {
    var stored = window.localStorage ? window.localStorage.getItem(KEY) : null;
    return stored === null ? 5 : Number(stored);
  }

  function say(text, bad) {
    if (!stamp) return;
    stamp.textContent = text;
    stamp.classList.toggle("live-bad", !!bad);
  }

  async function refresh() {
    if (document.hidden) return;
    var response;
    try {
      response = await fetch(window.location.href, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { "X-Dashboard-Live": "1" },
      });
    } catch (err) {
      say("offline", true);
      return;
    }
    if (response.redirected || !response.ok) {
      // Logged out (sent to the login page) or the page is gone: stop, say so.
      say(response.redirected ? "signed out" : "error " + response.status, true);
      stop();
      return;
    }
    var fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    document.querySelectorAll("[data-live][id]").forEach(function (region) {
      var next = fresh.getElementById(region.id);
      if (!next || region.contains(document.activeElement)) return;
      if (next.innerHTML !== region.innerHTML) region.replaceWith(document.importNode(next, true));
    });
    say("updated " + new Date().toLocaleTimeString());
  }

  function stop() {
    if (timer !== null) window.clearInterval(timer);
    timer = null;
  }

  function start() {
    stop();
    var every = seconds();
    if (main && every > 0) timer = window.setInterval(refresh, every * 1000);
    if (stamp) say(every > 0 ? "live" : "paused");
  }

  if (control && main && document.querySelector("[data-live][id]")) {
    var select = control.querySelector("select");
    select.value = String(seconds());
    select.addEventListener("change", function () {
      if (window.localStorage) window.localStorage.setItem(KEY, select.value);
      start();
    });
    control.hidden = false;
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer !== null) refresh();
    });
    start();
  }

  // -- JSON fields ----------------------------------------------------------------------

  function jsonProblem(field) {
    var text = field.value.trim();
    if (text === "") return field.required ? "required" : "";
    try {
      var value = JSON.parse(text);
      if (field.dataset.json === "object" && (value === null || typeof value !== "object" || Array.isArray(value))) {
        return "must be a JSON object";
      }
    } catch (err) {
      return "not valid JSON: " + err.message;
    }
    return "";
  }

  function showProblem(field, problem) {
    var slot = field.parentElement.querySelector(".field-error[data-client]");
    if (!slot) {
      slot = document.createElement("span");
      slot.className = "field-error";
      slot.dataset.client = "1";
      field.insertAdjacentElement("afterend", slot);
    }
    slot.textContent = problem;
    slot.hidden = problem === "";
    field.setAttribute("aria-invalid", problem === "" ? "false" : "true");
  }

  document.querySelectorAll("form").forEach(function (form) {
    var fields = form.querySelectorAll("textarea[data-json]");
    if (!fields.length) return;
    fields.forEach(function (field) {
      field.addEventListener("input", function () { showProblem(field, ""); });
    });
    form.addEventListener("submit", function (event) {
      var first = null;
      fields.forEach(function (field) {
        var problem = jsonProblem(field);
        showProblem(field, problem);
        if (problem && !first) first = field;
      });
      if (first) {
        event.preventDefault();
        first.focus();
      }
    });
  });

  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
})();
