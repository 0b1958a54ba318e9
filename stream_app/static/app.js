/* stream-reco live page. No build step, no dependencies.
 *
 *  GET /users/{id}         current recommendation/v1 message (JSON; 404 while the user is unknown)
 *  GET /users/{id}/events  Server-Sent Events, each `data:` line one recommendation/v1 message
 *  GET /overview           {events_per_s, lag, dead_letters_by_reason, model_version, model_watch,
 *                          online, recent_users}, every 2 s: the serving model and its swaps, the
 *                          online hit rate (a chart of the last CHART_POINTS polls, a dashed line
 *                          where the model was swapped), the recently active users to pick from
 *
 * `?user=ID` in the address selects a user on load. <body data-api="/prefix"> moves the API.
 * A worker with STREAM_RECO_HTTP_TOKEN answers 401 without its token: the page takes it from
 * `?token=` in the address, or asks for it, and keeps it in session storage; it is sent as
 * `Authorization: Bearer` (and as `?token=` on the event stream, which cannot send headers).
 * Stable ids for tests: #user-input #user-go #rec-list (li.rec[data-item-id]) #weights
 * #overview #events-applied #ov-swaps #online-hit #online-mrr #online-chart (polyline, line.swap)
 * #online-versions (.bar[data-dimension=version]) #recent-users (button[data-user]). A message older than the one shown (fewer events_applied) is
 * ignored, so a late initial GET cannot overwrite a newer streamed list.
 *
 * A forget arrives on the stream as {"user_id": ID, "forgotten": true}: the page drops the list,
 * shows the user as forgotten (#rec-list[data-forgotten="true"], events applied 0) and starts
 * over: the user's next list (their new life, events_applied from 1) is shown, and an answer to a
 * GET sent before the forget is ignored.
 */
(function () {
  "use strict";

  var API = (document.body.getAttribute("data-api") || "").replace(/\/$/, "");
  var OVERVIEW_EVERY_MS = 2000;
  var CHART_POINTS = 90;
  var PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2",
                 "#eeca3b", "#9d755d", "#bab0ac", "#ff9da6"];

  var TOKEN_KEY = "stream-reco-token";
  var asking = false;

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    form: $("user-form"), input: $("user-input"), go: $("user-go"), status: $("stream-status"),
    label: $("user-label"), message: $("user-message"), list: $("rec-list"), legend: $("legend"),
    weights: $("weights"), applied: $("events-applied"), model: $("rec-model"),
    updated: $("rec-updated"), ovRate: $("ov-rate"), ovLag: $("ov-lag"), ovModel: $("ov-model"),
    ovDead: $("ov-dead"), overview: $("overview"), ovSwaps: $("ov-swaps"), recentUsers: $("recent-users"),
    onlineHit: $("online-hit"), onlineMrr: $("online-mrr"), onlineJudged: $("online-judged"),
    onlineK: $("online-k"), onlineWindow: $("online-window"), chart: $("online-chart"),
    onlineVersions: $("online-versions")
  };
  var chart = { points: [], swaps: -1 };  // hit rate per poll; swap marks as {swap: true}

  var state = { user: null, token: 0, source: null, last: null, titles: {}, retry: null,
                messages: 0, forgets: 0 };
  var colors = {};

  // -- helpers -------------------------------------------------------------------------------
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function colorFor(dim) {
    if (!colors[dim]) colors[dim] = PALETTE[Object.keys(colors).length % PALETTE.length];
    return colors[dim];
  }

  function num(x, digits) {
    return (typeof x === "number" && isFinite(x)) ? x.toFixed(digits) : "–";
  }

  function setStatus(kind, text) {
    ui.status.className = "status " + kind;
    ui.status.textContent = text || kind;
  }

  function bar(name, value, scale, color) {
    var row = el("div", "bar" + (value < 0 ? " negative" : ""));
    row.setAttribute("data-dimension", name);
    row.setAttribute("data-value", String(value));
    var fill = el("div", "fill");
    var pct = scale > 0 ? Math.min(100, Math.abs(value) / scale * 100) : 0;
    fill.style.width = pct.toFixed(1) + "%";
    fill.style.backgroundColor = color || colorFor(name);
    var track = el("div", "track");
    track.appendChild(fill);
    row.appendChild(el("span", "name", name));
    row.appendChild(track);
    row.appendChild(el("span", "value", num(value, 3)));
    return row;
  }

  function titleOf(itemId) {
    return Object.prototype.hasOwnProperty.call(state.titles, itemId) ? state.titles[itemId] : itemId;
  }

  // -- rendering -----------------------------------------------------------------------------
  function forgotten(msg) {
    if (msg.user_id !== undefined && String(msg.user_id) !== state.user) return false;
    state.last = null;
    state.forgets += 1;
    ui.list.replaceChildren();
    ui.list.setAttribute("data-forgotten", "true");
    ui.weights.replaceChildren();
    ui.applied.textContent = "0";
    ui.updated.textContent = new Date().toLocaleTimeString();
    ui.message.textContent = "This user was forgotten: their history is erased; no list until their next event.";
    return true;
  }

  function render(msg) {
    if (msg && typeof msg === "object" && msg.forgotten === true) return forgotten(msg);
    if (!msg || typeof msg !== "object" || String(msg.user_id) !== state.user) return false;
    var applied = typeof msg.events_applied === "number" ? msg.events_applied : -1;
    if (state.last && applied < state.last.events_applied) return false;  // stale
    var previous = {};
    if (state.last) state.last.items.forEach(function (it) { previous[it.item_id] = it.rank; });
    if (msg.item_titles && typeof msg.item_titles === "object") {
      Object.keys(msg.item_titles).forEach(function (k) { state.titles[k] = msg.item_titles[k]; });
    }
    var items = Array.isArray(msg.items) ? msg.items.slice() : [];
    items.sort(function (a, b) { return (a.rank || 0) - (b.rank || 0); });
    state.last = { events_applied: applied, items: items };
    state.messages += 1;
    ui.list.removeAttribute("data-forgotten");

    ui.applied.textContent = String(msg.events_applied);
    ui.model.textContent = msg.model_version || "–";
    ui.updated.textContent = msg.generated_at ? new Date(msg.generated_at).toLocaleTimeString() : "–";

    var scale = 0;
    items.forEach(function (it) {
      Object.keys(it.reasons || {}).forEach(function (d) {
        scale = Math.max(scale, Math.abs(it.reasons[d]));
      });
    });
    var frag = document.createDocumentFragment();
    items.forEach(function (it) {
      var li = el("li", "rec");
      li.setAttribute("data-item-id", it.item_id);
      li.setAttribute("data-rank", String(it.rank));
      li.setAttribute("data-score", String(it.score));
      if (state.messages > 1 && previous[it.item_id] !== it.rank) li.className += " fresh";
      li.appendChild(el("span", "rank", it.rank));
      var title = el("span", "title", titleOf(it.item_id));
      title.title = "item " + it.item_id;
      li.appendChild(title);
      li.appendChild(el("span", "score", num(it.score, 3)));
      var reasons = el("div", "reasons");
      Object.keys(it.reasons || {}).forEach(function (d) {
        reasons.appendChild(bar(d, it.reasons[d], scale));
      });
      li.appendChild(reasons);
      frag.appendChild(li);
    });
    ui.list.replaceChildren(frag);
    ui.message.textContent = items.length ? "" : (applied === 0 ? "This user was forgotten (or has no events yet): no list."
                                                                : "No recommendations for this user yet.");

    var weights = msg.dimension_weights || {};
    var dims = Object.keys(weights);
    var wmax = dims.reduce(function (m, d) { return Math.max(m, Math.abs(weights[d])); }, 0);
    var wfrag = document.createDocumentFragment();
    dims.forEach(function (d) { wfrag.appendChild(bar(d, weights[d], wmax)); });
    ui.weights.replaceChildren(wfrag);

    var legend = document.createDocumentFragment();
    Object.keys(colors).forEach(function (d) {
      var s = el("span", null, d);
      s.style.setProperty("--swatch", colors[d]);
      legend.appendChild(s);
    });
    ui.legend.replaceChildren(legend);
    return true;
  }

  // -- access token ----------------------------------------------------------------------------
  function authToken() {
    try { return window.sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  function keepToken(value) {
    try { window.sessionStorage.setItem(TOKEN_KEY, value); } catch (e) { /* private mode: this page only */ }
  }

  function apiHeaders() {
    var h = { Accept: "application/json" };
    var t = authToken();
    if (t) h.Authorization = "Bearer " + t;
    return h;
  }

  function withToken(url) {
    var t = authToken();
    return t ? url + (url.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(t) : url;
  }

  function askToken() {  // after a 401: true when a (new) token was entered
    if (asking) return false;
    asking = true;
    var given = window.prompt("This worker asks for its access token (STREAM_RECO_HTTP_TOKEN):", "");
    asking = false;
    if (!given) return false;
    keepToken(given.trim());
    return true;
  }

  (function tokenFromAddress() {
    var url = new URL(window.location.href);
    var t = url.searchParams.get("token");
    if (t === null) return;
    keepToken(t);
    url.searchParams.delete("token");  // not left in the address bar or the history
    window.history.replaceState(null, "", url.toString());
  })();

  // -- data ------------------------------------------------------------------------------------
  function userUrl(user, suffix) {
    return API + "/users/" + encodeURIComponent(user) + (suffix || "");
  }

  function fetchCurrent(token) {
    var forgets = state.forgets;  // an answer sent before a forget is not shown after it
    return fetch(userUrl(state.user), { headers: apiHeaders(), cache: "no-store" })
      .then(function (res) {
        if (token !== state.token || forgets !== state.forgets) return;
        if (res.status === 401) {
          if (askToken()) select(state.user);
          else ui.message.textContent = "This worker asks for an access token (reload to enter it).";
          return;
        }
        if (res.status === 404) {
          if (!state.last) ui.message.textContent = "No list yet for this user; waiting for events…";
          return;
        }
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.json().then(function (msg) {
          if (token === state.token && forgets === state.forgets) render(msg);
        });
      })
      .catch(function (err) {
        if (token === state.token && !state.last) ui.message.textContent = "Cannot load the list: " + err.message;
      });
  }

  function openStream(token) {
    if (token !== state.token) return;
    var es = new EventSource(withToken(userUrl(state.user, "/events")));
    state.source = es;
    var onMessage = function (ev) {
      if (token !== state.token) return;
      try { render(JSON.parse(ev.data)); } catch (e) { console.warn("bad SSE message", e); }
    };
    es.onopen = function () {
      if (token !== state.token) return;
      setStatus("live");
      fetchCurrent(token);  // close the gap between the first GET and the subscription
    };
    es.onmessage = onMessage;
    es.addEventListener("recommendation", onMessage);
    es.onerror = function () {
      if (token !== state.token) return;
      if (es.readyState === EventSource.CLOSED) {  // the browser gave up: retry ourselves
        setStatus("reconnecting");
        state.retry = setTimeout(function () { openStream(token); }, 2000);
      } else {
        setStatus("reconnecting");
      }
    };
  }

  function select(user) {
    user = (user || "").trim();
    if (state.source) state.source.close();
    if (state.retry) clearTimeout(state.retry);
    state = { user: user || null, token: state.token + 1, source: null, last: null,
              titles: {}, retry: null, messages: 0, forgets: 0 };
    ui.list.replaceChildren();
    ui.list.removeAttribute("data-forgotten");
    ui.weights.replaceChildren();
    ui.applied.textContent = "–";
    ui.model.textContent = "–";
    ui.updated.textContent = "–";
    ui.label.textContent = user ? "for user " + user : "";
    ui.input.value = user;
    var url = new URL(window.location.href);
    if (user) url.searchParams.set("user", user); else url.searchParams.delete("user");
    window.history.replaceState(null, "", url.toString());
    if (!user) {
      setStatus("idle");
      ui.message.textContent = "Pick a user to see their current list.";
      return;
    }
    ui.message.textContent = "Loading…";
    setStatus("connecting");
    fetchCurrent(state.token);
    openStream(state.token);
  }

  function pollOverview() {
    fetch(API + "/overview", { headers: apiHeaders(), cache: "no-store" })
      .then(function (res) {
        if (res.status === 401 && !state.user) askToken();  // a selected user's 401 asks already
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.json();
      })
      .then(function (ov) {
        ui.ovRate.textContent = num(ov.events_per_s, 1);
        ui.ovLag.textContent = ov.lag === undefined || ov.lag === null ? "–" : String(ov.lag);
        ui.ovModel.textContent = ov.model_version || "–";
        var dead = ov.dead_letters_by_reason || {};
        var parts = Object.keys(dead).filter(function (k) { return dead[k]; })
          .map(function (k) { return k + ": " + dead[k]; });
        ui.ovDead.textContent = parts.length ? parts.join(", ") : "none";
        renderModel(ov);
        renderOnline(ov.online);
        renderRecent(ov.recent_users);
        ui.overview.setAttribute("data-updated", String(Date.now()));
        ui.overview.classList.remove("unavailable");
      })
      .catch(function () { ui.overview.classList.add("unavailable"); ui.ovRate.textContent = "unavailable"; });
  }

  // -- the worker's model and online evaluation ---------------------------------------------------
  function svg(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }

  function drawChart() {
    var pts = chart.points, w = 240, h = 60, n = Math.max(1, CHART_POINTS - 1);
    var coords = [], marks = [];
    pts.forEach(function (p, i) {
      var x = (i / n * w).toFixed(1);
      if (p.swap) marks.push(svg("line", { "class": "swap", x1: x, x2: x, y1: 0, y2: h }));
      else coords.push(x + "," + (h - 2 - p.hit * (h - 4)).toFixed(1));
    });
    var frag = document.createDocumentFragment();
    marks.forEach(function (m) { frag.appendChild(m); });
    frag.appendChild(svg("polyline", { points: coords.join(" ") }));
    ui.chart.replaceChildren(frag);
    ui.chart.setAttribute("data-points", String(coords.length));
  }

  function renderModel(ov) {
    var mw = ov.model_watch;
    if (!mw) { ui.ovSwaps.textContent = "no models folder"; return; }
    var when = mw.last_swap_at ? " (last " + new Date(mw.last_swap_at * 1000).toLocaleTimeString() + ")" : "";
    var refused = Object.keys(mw.refused || {});
    ui.ovSwaps.textContent = mw.swaps + when + (refused.length ? "; refused: " + refused.join(", ") : "");
    if (chart.swaps >= 0 && mw.swaps > chart.swaps) chart.points.push({ swap: true });
    chart.swaps = mw.swaps;
  }

  function renderOnline(online) {
    if (!online) return;
    ui.onlineK.textContent = String(online.k);
    ui.onlineWindow.textContent = String(online.window);
    ui.onlineHit.textContent = online.judged ? num(online.hit_rate, 3) : "–";
    ui.onlineMrr.textContent = online.judged ? num(online.mrr, 3) : "–";
    ui.onlineJudged.textContent = String(online.judged);
    if (online.judged) chart.points.push({ hit: online.hit_rate });
    while (chart.points.length > CHART_POINTS) chart.points.shift();
    drawChart();
    var byVersion = online.by_version || {};
    var vfrag = document.createDocumentFragment();
    Object.keys(byVersion).forEach(function (v) { vfrag.appendChild(bar(v, byVersion[v].hit_rate, 1, "#54a24b")); });
    ui.onlineVersions.replaceChildren(vfrag);
  }

  function renderRecent(users) {
    var frag = document.createDocumentFragment();
    (users || []).forEach(function (u) {
      var li = el("li");
      var b = el("button", null, u);
      b.type = "button";
      b.setAttribute("data-user", u);
      b.addEventListener("click", function () { select(u); });
      li.appendChild(b);
      frag.appendChild(li);
    });
    ui.recentUsers.replaceChildren(frag);
  }

  ui.form.addEventListener("submit", function (ev) { ev.preventDefault(); select(ui.input.value); });

  window.streamReco = { select: select, render: render, state: function () { return state; } };

  var initial = new URLSearchParams(window.location.search).get("user");
  if (initial) select(initial);
  pollOverview();
  setInterval(pollOverview, OVERVIEW_EVERY_MS);
})();
