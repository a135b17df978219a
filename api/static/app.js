"use strict";
// The search page: POST /search and render the hits. No framework, no build step.
(function () {
  const form = document.getElementById("search-form");
  const input = document.getElementById("query");
  const kSelect = document.getElementById("k");
  const button = document.getElementById("go");
  const status = document.getElementById("status");
  const results = document.getElementById("results");
  const about = document.getElementById("about");
  const indexInfo = document.getElementById("index-info");

  // The checked mode; none before /info has said the server's default (then the
  // server picks: hybrid where the index has BM25, else dense).
  function mode() {
    const checked = form.querySelector("input[name=mode]:checked");
    return checked ? checked.value : null;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;  // never innerHTML: text is data
    return node;
  }

  function describe(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    return JSON.stringify(detail);
  }

  function render(body) {
    results.replaceChildren();
    const top = body.hits.length ? Math.max(...body.hits.map((h) => h.score)) : 1;
    body.hits.forEach((hit, i) => {
      const li = el("li", "hit");
      li.dataset.id = hit.id;
      const head = el("div", "hit-head");
      head.append(el("span", "rank", String(i + 1) + "."));
      head.append(el("span", "title", hit.title || "(untitled)"));
      const score = el("span", "score");
      const bar = el("span", "bar");
      const fill = el("span");
      fill.style.width = Math.max(4, Math.round((100 * hit.score) / (top || 1))) + "%";
      bar.append(fill);
      score.append(bar, el("span", "score-value", hit.score.toFixed(4)));
      head.append(score);
      li.append(head, el("p", "snippet", hit.snippet), el("p", "doc-id", hit.id));
      results.append(li);
    });
    const n = body.hits.length;
    status.className = "muted";
    status.textContent = n
      ? `${n} hit${n === 1 ? "" : "s"} in ${body.took_ms.toFixed(1)} ms (${body.mode})`
      : `No hits (${body.mode}).`;
  }

  async function search() {
    const query = input.value.trim();
    if (!query) return;
    const params = new URLSearchParams({ q: query, k: kSelect.value });
    const request = { query: query, k: Number(kSelect.value) };
    if (mode()) {
      params.set("mode", mode());
      request.mode = mode();
    }
    history.replaceState(null, "", "?" + params.toString());
    button.disabled = true;
    status.className = "muted";
    status.textContent = "Searching…";
    try {
      const response = await fetch("/search", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request),
      });
      const body = await response.json();
      if (!response.ok) throw new Error(describe(body.detail));
      render(body);
    } catch (err) {
      results.replaceChildren();
      status.className = "error";
      status.textContent = "Error: " + err.message;
    } finally {
      button.disabled = false;
    }
  }

  async function loadInfo() {
    try {
      const response = await fetch("/info");
      if (!response.ok) return;
      const info = await response.json();
      about.textContent = `Searching ${info.index.size.toLocaleString()} documents with ` +
        `${info.model.name} (${info.model.backend}, ${info.model.dim}-d).`;
      indexInfo.textContent = `${info.index.factory} index · generation ${info.generation}`;
      input.maxLength = info.limits.max_query_chars;
      const byDefault = form.querySelector(`input[name=mode][value="${info.default_mode}"]`);
      if (byDefault) byDefault.checked = true;
      if (!info.bm25.available) {
        for (const value of ["bm25", "hybrid"]) {
          const radio = form.querySelector(`input[value=${value}]`);
          radio.disabled = true;
          radio.parentElement.title = "this index has no BM25 index";
        }
      }
    } catch (err) {
      // The page still works without /info.
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  form.querySelectorAll("input[name=mode]").forEach((radio) =>
    radio.addEventListener("change", () => { if (input.value.trim()) search(); }));
  kSelect.addEventListener("change", () => { if (input.value.trim()) search(); });

  const initial = new URLSearchParams(location.search);
  loadInfo().then(() => {
    const m = initial.get("mode");
    const radio = m && form.querySelector(`input[name=mode][value="${CSS.escape(m)}"]`);
    if (radio && !radio.disabled) radio.checked = true;
    if (initial.get("k")) kSelect.value = initial.get("k");
    if (initial.get("q")) {
      input.value = initial.get("q");
      search();
    }
  });
})();
