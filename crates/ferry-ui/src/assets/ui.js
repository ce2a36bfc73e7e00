// ferry ui: the page's only script (embedded in the binary, no framework). Everything works
// without it (links, GET filters, POST forms); with it, the page follows the cluster live over
// Server-Sent Events, filters as you type and runs actions without leaving the page.
"use strict";
(function () {
  const body = document.body;
  const announce = (text) => { const a = document.getElementById("announce"); if (a) a.textContent = text; };
  const conn = document.getElementById("conn");
  const setConn = (text) => { if (conn) conn.textContent = " · live: " + text; };

  // Filters: the same rules as the server's (model::Filter), applied to rows in place.
  const form = document.querySelector("form.filters");
  const value = (name) => (form && form.elements[name] ? form.elements[name].value : "");
  function matches(tr) {
    const q = value("q").trim().toLowerCase();
    return (!q || tr.dataset.name.toLowerCase().includes(q)) &&
      (!value("namespace") || tr.dataset.namespace === value("namespace")) &&
      (!value("sync") || tr.dataset.sync === value("sync")) &&
      (!value("health") || tr.dataset.health === value("health")) &&
      (!value("kind") || tr.dataset.kind === value("kind"));
  }
  function recount() {
    const rows = document.querySelectorAll("#apps tbody tr");
    let shown = 0;
    rows.forEach((tr) => { if (!tr.hidden) shown++; });
    const s = document.getElementById("shown"), t = document.getElementById("total");
    if (s) s.textContent = String(shown);
    if (t) t.textContent = String(rows.length);
  }
  function applyFilter() {
    document.querySelectorAll("#apps tbody tr").forEach((tr) => { tr.hidden = !matches(tr); });
    recount();
  }
  if (form) {
    form.addEventListener("input", () => {
      applyFilter();
      const params = new URLSearchParams(new FormData(form));
      for (const [k, v] of [...params]) if (!v) params.delete(k);
      history.replaceState(null, "", "/" + (params.toString() ? "?" + params : ""));
    });
  }

  function fromHtml(html) {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }

  // Detail page: reload the panel when the server says the app changed, keeping focus.
  let refreshing = false, again = false;
  async function refresh() {
    const url = body.dataset.refresh;
    if (!url) return;
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const res = await fetch(url, { credentials: "same-origin", headers: { "X-Ferry-Ui": "fetch" } });
      if (res.ok) {
        const panel = document.getElementById("panel");
        const active = document.activeElement;
        const form = active && active.closest("form.action");
        const actionPath = form ? form.getAttribute("action") : null;
        // The diff was computed on request: keep it (and the checkbox) across the reload.
        const oldDiff = document.getElementById("diff-result");
        const kept = oldDiff ? oldDiff.innerHTML : "";
        const oldLatest = document.querySelector("form.diff input[name=latest]");
        const latest = oldLatest ? oldLatest.checked : false;
        panel.innerHTML = await res.text();
        const newDiff = document.getElementById("diff-result");
        if (newDiff && kept) newDiff.innerHTML = kept;
        const newLatest = document.querySelector("form.diff input[name=latest]");
        if (newLatest) newLatest.checked = latest;
        if (actionPath) {
          const again = panel.querySelector('form.action[action="' + CSS.escape(actionPath) + '"] button');
          if (again) again.focus();
        }
        body.dataset.updated = String(Date.now());
      }
    } finally {
      refreshing = false;
      if (again) { again = false; refresh(); }
    }
  }

  // Live updates over SSE: rows replaced in place on the list, a panel reload on a detail page.
  if (body.dataset.live && window.EventSource) {
    const source = new EventSource(body.dataset.live, { withCredentials: true });
    source.addEventListener("open", () => setConn("on"));
    source.addEventListener("error", () => setConn("reconnecting"));
    source.addEventListener("row", (ev) => {
      const msg = JSON.parse(ev.data);
      const tr = fromHtml(msg.html);
      const old = document.getElementById(msg.id);
      if (old) old.replaceWith(tr);
      else { const tb = document.querySelector("#apps tbody"); if (tb) tb.appendChild(tr); }
      tr.hidden = !matches(tr);
      recount();
      body.dataset.updated = String(Date.now());
    });
    source.addEventListener("remove", (ev) => {
      const msg = JSON.parse(ev.data);
      const old = document.getElementById(msg.id);
      if (old) old.remove();
      recount();
    });
    source.addEventListener("refresh", () => refresh());
    // The server dropped changes for this page (it fell far behind): start over once.
    source.addEventListener("resync", () => location.reload());
  }

  // The diff between git and the cluster: computed by the server when asked, shown in place.
  async function showDiff(f) {
    const out = document.getElementById("diff-result");
    const button = f.querySelector("button");
    if (!out) return;
    if (button) button.disabled = true;
    out.setAttribute("aria-busy", "true");
    out.textContent = "Computing the diff (fetching git, rendering, dry-run apply as you)…";
    try {
      const params = new URLSearchParams(new FormData(f));
      const res = await fetch(f.action + (params.toString() ? "?" + params : ""), {
        credentials: "same-origin", headers: { "X-Ferry-Ui": "fetch" },
      });
      const text = await res.text();
      const target = document.getElementById("diff-result") || out;
      if (res.ok) target.innerHTML = text;
      else target.textContent = "No diff: " + text;
      announce("Diff computed");
    } catch (e) {
      out.textContent = "request failed: " + e;
    } finally {
      const target = document.getElementById("diff-result");
      if (target) target.removeAttribute("aria-busy");
      const b = document.querySelector("form.diff button");
      if (b) b.disabled = false;
      if (button) button.disabled = false;
    }
  }

  // Actions: POST with the page's token, the answer shown in the status line.
  document.addEventListener("submit", async (ev) => {
    const f = ev.target;
    if (f instanceof HTMLFormElement && f.classList.contains("diff")) {
      ev.preventDefault();
      showDiff(f);
      return;
    }
    if (!(f instanceof HTMLFormElement) || !f.classList.contains("action")) return;
    ev.preventDefault();
    const result = document.getElementById("result");
    const button = f.querySelector("button");
    if (button) button.disabled = true;
    try {
      const res = await fetch(f.action, {
        method: "POST", credentials: "same-origin",
        headers: { "X-Ferry-Ui": "fetch", "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(new FormData(f)),
      });
      const text = await res.text();
      if (result) { result.textContent = text; result.classList.toggle("error", !res.ok); }
      announce(text);
      refresh();
    } catch (e) {
      if (result) { result.textContent = "request failed: " + e; result.classList.add("error"); }
    } finally {
      if (button) button.disabled = false;
    }
  });
})();
