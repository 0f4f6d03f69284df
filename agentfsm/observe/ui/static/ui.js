// agentfsm ui: step through a run without reloading (#step=N, the arrow keys), and refresh runs that are
// still going. Plain JavaScript, no framework, no build step. The server draws every page complete; this
// script only shows and hides what the page already holds, by each piece's data-step.
(function () {
  "use strict";

  function main() { return document.getElementById("main"); }
  function nums(text) { return (text || "").split(" ").filter(Boolean).map(Number); }

  function stepFromHash() {
    var m = /(?:^#|&)step=(\d+)/.exec(location.hash);
    return m ? parseInt(m[1], 10) : null;
  }

  function setLink(m, selector, target, k, last) {
    var a = m.querySelector(selector);
    if (!a) return;
    var off = target < 1 || target > last || target === k;
    target = Math.min(Math.max(target, 1), last);
    a.dataset.goto = String(target);
    a.setAttribute("href", "?step=" + target + (m.dataset.graph === "path" ? "&graph=path" : ""));
    a.classList.toggle("off", off);
    if (off) { a.setAttribute("aria-disabled", "true"); a.setAttribute("tabindex", "-1"); }
    else { a.removeAttribute("aria-disabled"); a.removeAttribute("tabindex"); }
  }

  // Show the run as it was after step k: the same rules as the server's (agentfsm/observe/ui/pages.py).
  function show(k) {
    var m = main();
    if (!m || m.dataset.page !== "run") return;
    var last = parseInt(m.dataset.last, 10);
    if (!last) return;
    k = Math.min(Math.max(k, 1), last);
    m.dataset.step = String(k);
    m.querySelectorAll(".history [data-step]").forEach(function (el) {
      var at = Number(el.dataset.step);
      el.hidden = at > k;
      el.classList.toggle("added", at === k && k > 1);
    });
    var shown = Array.prototype.filter.call(m.querySelectorAll(".history article.message"), function (a) {
      a.classList.remove("grows-later");
      return !a.hidden;
    });
    var lastMessage = shown[shown.length - 1];
    if (lastMessage && lastMessage.querySelector("[data-step][hidden]")) lastMessage.classList.add("grows-later");
    m.querySelectorAll(".timeline li[data-step]").forEach(function (li) {
      var at = Number(li.dataset.step);
      li.classList.toggle("selected", at === k);
      li.classList.toggle("future", at > k);
      li.classList.toggle("past", at < k);
    });
    m.querySelectorAll("table.tools tr[data-step]").forEach(function (tr) {
      var at = Number(tr.dataset.step), answered = Number(tr.dataset.answered || 0);
      tr.classList.toggle("future", at > k);
      tr.classList.toggle("added", k > 1 && (at === k || answered === k));
    });
    var svg = m.querySelector("svg.agent-graph");
    if (svg) {
      svg.dataset.step = String(k);
      svg.querySelectorAll(".state").forEach(function (g) {
        var visited = g.dataset.from !== undefined && Number(g.dataset.from) <= k;
        g.classList.toggle("visited", visited);
        g.classList.toggle("unvisited", !visited);
        g.classList.toggle("current", nums(g.dataset.at).indexOf(k) >= 0);
      });
      svg.querySelectorAll(".edge").forEach(function (g) {
        var taken = nums(g.dataset.steps).filter(function (s) { return s <= k; }).length;
        g.classList.toggle("taken", taken > 0);
        g.classList.toggle("untaken", taken === 0);
        var count = g.querySelector(".count");
        if (count) count.textContent = taken ? (count.dataset.sep || "") + "×" + taken : "";
      });
    }
    m.querySelectorAll(".step-no").forEach(function (el) { el.textContent = String(k); });
    var item = m.querySelector('.timeline li[data-step="' + k + '"]');
    var label = m.querySelector(".stepper .step-label");
    if (item && label) label.textContent = item.dataset.label;
    setLink(m, ".stepper .first", 1, k, last);
    setLink(m, ".stepper .prev", k - 1, k, last);
    setLink(m, ".stepper .next", k + 1, k, last);
    setLink(m, ".stepper .last", last, k, last);
    reveal(m);
  }

  // Scroll the history and the timeline (each scrolls on its own) to what this step is about.
  function reveal(m) {
    [[".messages", ".added"], ["ol.steps", "li.selected"]].forEach(function (pair) {
      var box = m.querySelector(pair[0]), el = box && box.querySelector(pair[1]);
      if (!box || !el) return;
      var top = el.offsetTop;  // the box is positioned, so this is from its top
      if (top < box.scrollTop || top > box.scrollTop + box.clientHeight - 40) box.scrollTop = Math.max(0, top - 24);
    });
  }

  function go(k) {
    if (stepFromHash() === k) show(k);
    else location.hash = "step=" + k;  // the hashchange shows it, and Back goes to the step seen before
  }

  function current() {
    var m = main();
    return m ? Number(m.dataset.step || 0) : 0;
  }

  document.addEventListener("click", function (event) {
    var a = event.target.closest ? event.target.closest("a[data-goto]") : null;
    if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    if (a.getAttribute("aria-disabled") !== "true") go(Number(a.dataset.goto));
  });

  document.addEventListener("keydown", function (event) {
    var m = main();
    if (!m || m.dataset.page !== "run" || event.altKey || event.ctrlKey || event.metaKey) return;
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName)) return;
    var k = current(), last = Number(m.dataset.last || 0);
    var to = { ArrowLeft: k - 1, ArrowRight: k + 1, Home: 1, End: last }[event.key];
    if (to === undefined || to < 1 || to > last || to === k) return;
    event.preventDefault();
    go(to);
  });

  window.addEventListener("hashchange", function () {
    var k = stepFromHash();
    if (k !== null) show(k);
  });

  // --- live runs: poll a fingerprint, and draw the page again when it changes -----------------------------

  function status(text) {
    var el = document.querySelector(".live-status");
    if (el) el.textContent = text;
  }

  var busy = false;

  function refresh(m) {
    var following = m.dataset.page !== "run" || current() === Number(m.dataset.last || 0);
    var step = current();
    var graph = m.dataset.graph === "path" ? "graph=path" : "";
    var url = location.pathname + (following ? (graph ? "?" + graph : "") : "?step=" + step + (graph ? "&" + graph : ""));
    if (m.dataset.page === "runs") url = location.pathname + location.search;  // the list keeps its filter and page
    return fetch(url, { cache: "no-store" }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.text();
    }).then(function (text) {
      var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("main");
      if (!fresh) return;
      m.replaceWith(document.importNode(fresh, true));
      if (following) {
        if (location.hash) history.replaceState(null, "", location.pathname + (graph ? "?" + graph : ""));
      } else {
        show(step);
      }
    });
  }

  function poll() {
    var m = main();
    if (busy || !m || m.dataset.live !== "1" || !m.dataset.poll) return;
    busy = true;
    fetch(m.dataset.poll, { cache: "no-store" }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    }).then(function (body) {
      if (body.signature !== m.dataset.signature) return refresh(m);
    }).then(function () {
      status("live · " + new Date().toLocaleTimeString());
    }).catch(function () {
      status("cannot reach the server");
    }).then(function () { busy = false; });
  }

  function start() {
    var k = stepFromHash();
    if (k !== null) show(k);
    else if (main()) reveal(main());
    document.documentElement.dataset.js = "ready";
    var m = main();
    if (m && m.dataset.live === "1") status("live");
    setInterval(poll, Number((m && m.dataset.interval) || 2000));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
