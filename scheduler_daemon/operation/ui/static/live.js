// Live updates of the status page (GET /ui/events, server-sent events): a strip cell per
// attempt starting or finishing, the row's state and last run, the counters (but `paused`). Everything
// else works without this file. Pausing closes the stream; resuming reloads the page (what
// happened meanwhile is not replayed).
"use strict";
(function () {
  var KEY = "scheduler_daemon.live";
  var FAILED = { failed: 1, timed_out: 1, missed: 1, abandoned: 1 };
  var source = null;
  var button = null;

  function paused() {
    try { return localStorage.getItem(KEY) === "paused"; } catch (e) { return false; }
  }

  function remember(state) {
    try { localStorage.setItem(KEY, state); } catch (e) { /* private mode: per page only */ }
  }

  // As ui_view.duration, by the same float arithmetic (half up: floor(x + 0.5)).
  function duration(ms) {
    if (ms === null || ms === undefined) return "";
    if (ms < 999.5) return Math.floor(ms + 0.5) + " ms";
    if (ms < 9950) {
      var tenths = Math.floor(ms / 100 + 0.5);
      return Math.floor(tenths / 10) + "." + (tenths % 10) + " s";
    }
    var whole = Math.floor(ms / 1000 + 0.5);
    if (whole < 60) return whole + " s";
    var m = Math.floor(whole / 60), rest = whole % 60;
    if (m < 60) return m + " min" + (rest ? " " + rest + " s" : "");
    return Math.floor(m / 60) + " h" + (m % 60 ? " " + (m % 60) + " min" : "");
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function when(iso) {  // `2026-11-27 08:00`, seconds when not zero (UTC, as the server's)
    var d = new Date(iso);
    var text = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) +
      " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    return d.getUTCSeconds() || d.getUTCMilliseconds() ? text + ":" + pad(d.getUTCSeconds()) : text;
  }

  function stamp(iso) {  // `2026-11-27 08:00:00 UTC`, as ui_view.instant
    var d = new Date(iso);
    return when(iso).slice(0, 16) + ":" + pad(d.getUTCSeconds()) + " UTC";
  }

  function late(e) { return e.trigger === "schedule" && e.drift_ms > 1000; }

  function label(e) {  // as ui_view.label: `2026-11-27 08:00 · failed · 3.2 s late · 41 s · exit 1`
    var parts = [when(e.scheduled_at), e.status];
    if (late(e)) parts.push(duration(e.drift_ms) + " late");
    if (e.trigger !== "schedule") parts.push(e.trigger);
    if (e.attempt > 1) parts.push("attempt " + e.attempt);
    if (e.duration_ms !== null && e.duration_ms !== undefined) parts.push(duration(e.duration_ms));
    if (e.exit_code !== null && e.exit_code !== undefined) parts.push("exit " + e.exit_code);
    if (e.http_status !== null && e.http_status !== undefined) parts.push("HTTP " + e.http_status);
    return parts.join(" · ");
  }

  // Where a job shows: its board row (strip, state badge, last run), or the job page's strip
  // and state badge. Other pages (failures, a run) have nothing to update.
  function places(job) {
    var out = [];
    document.querySelectorAll("#board tr[data-job]").forEach(function (row) {
      if (row.getAttribute("data-job") === job) {
        out.push({ scope: row, holder: row, badge: row.querySelector("[data-field=state]") });
      }
    });
    var strip = document.getElementById("job-strip");
    var badge = document.getElementById("job-state");
    if (strip && strip.getAttribute("data-job") === job) {
      out.push({ scope: strip, holder: badge, badge: badge });
    }
    return out;
  }

  function counter(name, delta) {
    var link = document.getElementById("filter-" + name);
    if (!link) return;
    var n = Math.max(0, (parseInt(link.getAttribute("data-count"), 10) || 0) + delta);
    link.setAttribute("data-count", String(n));
    var figure = link.querySelector("b");
    if (figure) figure.textContent = String(n);
  }

  function setState(place, state) {
    var holder = place.holder, badge = place.badge;
    if (!holder || !badge) return;
    var before = holder.getAttribute("data-state");
    if (before === state) return;
    if (place.scope === holder) {  // a board row: the counters count rows
      if (before === "running") counter("running", -1);
      if (state === "running") counter("running", 1);
    }
    holder.setAttribute("data-state", state);
    badge.setAttribute("data-state", state);
    badge.textContent = state;
    badge.className = badge.className.replace(/\bstate-\S+/, "state-" + state);
  }

  // The cell of this fire in the strip (its newest attempt), or a new one at the newest end.
  function cell(strip, e) {
    var found = strip.querySelector('a[data-fire="' + e.fire_id + '"]');
    if (found) return found;
    // A cell the server drew (no data-fire) for the same fire: its words start with the fire's
    // time, as this page writes them.
    var prefix = when(e.scheduled_at) + " · ";
    var drawn = strip.querySelectorAll("a[data-status]:not([data-fire])");
    for (var i = drawn.length - 1; i >= 0; i--) {
      if ((drawn[i].getAttribute("aria-label") || "").indexOf(prefix) === 0) {
        drawn[i].setAttribute("data-fire", e.fire_id);
        return drawn[i];
      }
    }
    var item = document.createElement("li");
    var link = document.createElement("a");
    link.setAttribute("data-fire", e.fire_id);
    item.appendChild(link);
    strip.appendChild(item);
    var keep = parseInt(strip.getAttribute("data-size"), 10) || strip.children.length;
    strip.setAttribute("data-size", String(keep));
    while (strip.children.length > keep) strip.removeChild(strip.firstElementChild);
    return link;
  }

  // As the board's `failing`: the newest finished fire (running and skipped ones apart) failed.
  function failing(scope) {
    var drawn = scope.querySelectorAll("a[data-status]");
    for (var i = drawn.length - 1; i >= 0; i--) {
      var status = drawn[i].getAttribute("data-status");
      if (status !== "running" && status !== "skipped") return status in FAILED;
    }
    return false;
  }

  function show(e) {
    places(e.job).forEach(function (place) {
      var wasFailing = failing(place.scope);
      place.scope.querySelectorAll("ol.strip, ol.strip-long").forEach(function (strip) {
        var link = cell(strip, e);
        link.setAttribute("data-status", e.status);
        if (late(e)) link.setAttribute("data-late", "1"); else link.removeAttribute("data-late");
        link.setAttribute("aria-label", label(e));
        if (e.id) link.setAttribute("href", "/ui/executions/" + e.id);
      });
      if (place.scope === place.holder && failing(place.scope) !== wasFailing) {
        counter("failing", wasFailing ? -1 : 1);
      }
      // As the board's `late`: the newest scheduled fire to start started late.
      if (place.scope === place.holder && e.trigger === "schedule" &&
          e.drift_ms !== null && e.drift_ms !== undefined) {
        var wasLate = place.holder.hasAttribute("data-late-now");
        if (late(e) !== wasLate) {
          counter("late", wasLate ? -1 : 1);
          if (wasLate) place.holder.removeAttribute("data-late-now");
          else place.holder.setAttribute("data-late-now", "1");
        }
      }
      var holder = place.holder;
      var current = holder ? holder.getAttribute("data-state") : null;
      if (place.scope.querySelector('[data-status="running"]') !== null) {
        if (holder && current !== "running") holder.setAttribute("data-was", current || "enabled");
        setState(place, "running");
      } else if (current === "running") {
        setState(place, holder.getAttribute("data-was") || "enabled");
      }
      var last = place.scope.querySelector("[data-field=last-run]");
      if (last && e.started_at) {
        last.textContent = "";
        var time = document.createElement("time");
        time.setAttribute("datetime", e.started_at);
        time.textContent = stamp(e.started_at);
        last.appendChild(time);
      }
    });
  }

  function handler(fn) {
    return function (message) {
      try { fn(JSON.parse(message.data)); } catch (err) { console.warn("live update", err); }
    };
  }

  function status(text, state) {
    var el = document.getElementById("live-status");
    if (el) el.textContent = text;
    var box = document.getElementById("live");
    if (box) box.setAttribute("data-state", state || text);
  }

  function connect() {
    source = new EventSource("/ui/events");
    source.addEventListener("open", function () { status("live"); });
    source.addEventListener("error", function () { status("reconnecting…", "reconnecting"); });
    source.addEventListener("started", handler(show));
    source.addEventListener("finished", handler(show));
    source.addEventListener("resync", function () { window.location.reload(); });
  }

  function toggle() {
    if (source) {
      source.close();
      source = null;
      remember("paused");
      button.textContent = "Resume live updates";
      button.setAttribute("aria-pressed", "true");
      status("paused");
    } else {
      remember("live");
      window.location.reload();  // what happened while paused
    }
  }

  function start() {
    var style = document.createElement("link");
    style.rel = "stylesheet";
    style.href = "/ui/static/live.css";
    document.head.appendChild(style);
    var header = document.querySelector("header.top") || document.body;
    var box = document.createElement("span");
    box.className = "live";
    box.id = "live";
    var state = document.createElement("span");
    state.id = "live-status";
    state.setAttribute("role", "status");
    button = document.createElement("button");
    button.type = "button";
    button.id = "live-toggle";
    button.addEventListener("click", toggle);
    box.appendChild(state);
    box.appendChild(document.createTextNode(" "));
    box.appendChild(button);
    header.appendChild(box);
    if (paused()) {
      button.textContent = "Resume live updates";
      button.setAttribute("aria-pressed", "true");
      status("paused");
    } else {
      button.textContent = "Pause live updates";
      button.setAttribute("aria-pressed", "false");
      status("connecting…", "connecting");
      connect();
    }
    window.addEventListener("pagehide", function () { if (source) source.close(); });
  }

  if (document.getElementById("board") || document.getElementById("job-strip")) start();
})();
