// The search page of `torchclip serve`: plain JavaScript, no build step, nothing loaded from elsewhere.
// Every caption, path and message is put on the page with textContent, never as HTML.
"use strict";

const PAGE = 40;
const AHEAD_PX = 300; // the next page is asked for when the end of the grid comes this close to the window's
const $ = (id) => document.getElementById(id);
// seq numbers each query shown: an answer for an earlier one (late, or for a query since cleared) is dropped.
// shown holds the ids on the page, so a result is never shown twice even if the collection changed between pages.
const state = { query: null, minScore: null, where: "", nextOffset: null, loading: false, kind: "image",
                seq: 0, results: [], shown: new Set() };

function setMessage(text, isError = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", isError);
}

async function api(path, body) {
  const options = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" },
                                              body: JSON.stringify(body) };
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (response.status === 401) { $("login").hidden = false; $("token").focus(); }
  if (!response.ok) throw new Error((data && data.error) || `HTTP ${response.status}`);
  return data;
}

// ---------------------------------------------------------------- the query and the URL

function queryFromUrl() {
  const params = new URLSearchParams(location.search);
  const min = params.get("min");
  state.minScore = min === null ? null : Number(min);
  state.where = params.get("where") || "";
  if (params.get("id") !== null) return { id: Number(params.get("id")), label: params.get("label") || "" };
  if (params.get("q")) return { text: params.get("q") };
  return null;
}

function urlOf(query) {
  const params = new URLSearchParams();
  if (query && query.text) params.set("q", query.text);
  if (query && query.id !== undefined) { params.set("id", String(query.id)); if (query.label) params.set("label", query.label); }
  if (state.minScore !== null) params.set("min", String(state.minScore));
  if (state.where) params.set("where", state.where);
  const search = params.toString();
  return search ? `?${search}` : location.pathname;
}

function showControls(query) {
  $("q").value = query && query.text ? query.text : "";
  $("where").value = state.where;
  const slider = $("min-score");
  slider.value = state.minScore === null ? slider.min : String(state.minScore);
  $("min-score-value").textContent = state.minScore === null ? "off" : state.minScore.toFixed(2);
  const chip = query && (query.id !== undefined || query.image);
  $("query-chip").hidden = !chip;
  if (chip) $("query-label").textContent = query.id !== undefined
    ? `More like: ${query.label || "item " + query.id}` : `Image: ${query.label || "dropped image"}`;
}

// push: true for a new query (a history entry), false when only refining it (replace the entry)
function run(query, push) {
  state.seq += 1;
  state.query = query;
  const url = urlOf(query); // an image query is not put in the URL (too big): it keeps only the filters
  if (url !== (location.search || location.pathname)) {
    (push ? history.pushState : history.replaceState).call(history, null, "", url);
  }
  showControls(query);
  state.results = [];
  state.shown = new Set();
  $("results").replaceChildren();
  state.nextOffset = null;
  state.loading = false;
  showMoreButton();
  if (!query) { setMessage("Type to search, or drop an image."); return; }
  load(0);
}

// one page of the current query from `offset`: the first page (0) by run(), the next ones as the grid's end
// comes near the window (loadMoreIfNear) or by the "More results" button
async function load(offset) {
  const seq = state.seq;
  state.loading = true;
  showMoreButton();
  const body = { k: PAGE, offset };
  const query = state.query;
  if (query.text) body.text = query.text;
  else if (query.id !== undefined) body.id = query.id;
  else if (query.image) body.image = query.image;
  if (state.minScore !== null) body.min_score = state.minScore;
  if (state.where) body.where = state.where;
  if (offset === 0) setMessage("Searching…");
  let data;
  try {
    data = await api("/api/search", body);
  } catch (error) {
    if (seq !== state.seq) return;
    state.loading = false;
    showMoreButton(); // a failed page is asked again by the button or by scrolling back to it, never by itself
    setMessage(`${offset ? "Loading more" : "Search"} failed: ${error.message}`, true);
    return;
  }
  if (seq !== state.seq) return; // a newer query has started, or the box was cleared: drop this answer
  state.loading = false;
  data.results.filter((result) => !state.shown.has(result.id)).forEach((result) => addCard(result));
  state.nextOffset = data.next_offset;
  const count = state.results.length;
  setMessage(count ? `${count}${data.next_offset !== null ? "+" : ""} results · ${data.took_ms} ms`
                   : "No results. Try other words, a lower min score, or another filter.");
  showMoreButton();
  loadMoreIfNear(); // a page too short to fill the window: the observer would not fire again
}

function loadMoreIfNear() {
  if (state.nextOffset === null || state.loading) return;
  if ($("sentinel").getBoundingClientRect().top < innerHeight + AHEAD_PX) load(state.nextOffset);
}

function showMoreButton() {
  $("more").hidden = state.nextOffset === null; // not disabled while loading: that would take its focus away
  $("more").textContent = state.loading ? "Loading…" : "More results";
}

// ---------------------------------------------------------------- results

function baseName(key) { return String(key).split(/[\\/]/).pop(); }

function addCard(result) {
  const index = state.results.push(result) - 1;
  state.shown.add(result.id);
  const card = document.createElement("div");
  card.className = "card";
  card.tabIndex = 0;
  card.setAttribute("role", "listitem");
  card.dataset.index = String(index);
  if (result.thumbnail) {
    const img = document.createElement("img");
    img.className = "thumb";
    img.loading = "lazy";
    img.src = result.thumbnail;
    img.alt = baseName(result.key);
    img.addEventListener("click", () => openDetail(index));
    card.append(img);
  } else {
    const caption = document.createElement("div");
    caption.className = "caption";
    caption.textContent = result.caption || result.key;
    caption.addEventListener("click", () => openDetail(index));
    card.append(caption);
  }
  const info = document.createElement("div");
  info.className = "info";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = result.thumbnail ? baseName(result.key) : "";
  name.title = result.key;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = result.score.toFixed(3);
  const more = document.createElement("button");
  more.type = "button";
  more.className = "more";
  more.textContent = "More like this";
  more.addEventListener("click", () => moreLikeThis(result));
  info.append(name, score, more);
  card.append(info);
  card.addEventListener("keydown", (event) => {
    if (event.target !== card) return; // keys on its "More like this" button are the button's
    if (event.key === "Enter") { event.preventDefault(); openDetail(index); } // else Enter would click "close"
    if (event.key === "m") moreLikeThis(result);
  });
  $("results").append(card);
}

function moreLikeThis(result) {
  closeDetail();
  run({ id: result.id, label: baseName(result.key) }, true);
}

function openDetail(index) {
  const result = state.results[index];
  state.detail = index;
  $("detail-image").hidden = !result.image;
  if (result.image) { $("detail-image").src = result.image; $("detail-image").alt = baseName(result.key); }
  $("detail-caption").textContent = result.caption || "";
  const meta = $("detail-meta");
  meta.replaceChildren();
  const facts = [["path", result.key], ["score", result.score.toFixed(4)]];
  if (result.width) facts.push(["pixels", `${result.width} × ${result.height}`]);
  if (result.size !== undefined && result.size >= 0) facts.push(["size", `${(result.size / 1024).toFixed(1)} KB`]);
  const date = result.taken_at || (result.mtime ? new Date(mtimeMs(result.mtime)).toISOString() : null);
  if (date) facts.push(["date", String(date)]);
  for (const [term, value] of facts) {
    const dt = document.createElement("dt"); dt.textContent = term;
    const dd = document.createElement("dd"); dd.textContent = value;
    meta.append(dt, dd);
  }
  $("detail-more").onclick = () => moreLikeThis(result);
  $("detail").hidden = false;
  $("detail-close").focus();
}

function mtimeMs(mtime) { return mtime > 1e14 ? mtime / 1e6 : mtime * 1000; } // ns or seconds

function closeDetail() {
  if ($("detail").hidden) return;
  $("detail").hidden = true;
  const card = $("results").querySelector(`[data-index="${state.detail}"]`);
  if (card) card.focus();
}

// ---------------------------------------------------------------- image queries

function searchImageFile(file) {
  if (!file || !file.type.startsWith("image/")) { setMessage("That is not an image file.", true); return; }
  const reader = new FileReader();
  reader.onload = () => run({ image: String(reader.result).split(",")[1], label: file.name || "pasted image" }, true);
  reader.onerror = () => setMessage("Could not read that file.", true);
  reader.readAsDataURL(file);
}

// ---------------------------------------------------------------- wiring

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function init() {
  // typing on in the same query (one text a prefix of the other) refines its history entry; a new query adds one
  const typed = debounce(() => {
    const text = $("q").value.trim();
    const before = state.query && state.query.text;
    if (text) run({ text }, !(before && (text.startsWith(before) || before.startsWith(text))));
    else if (before) run(null, true);
  }, 250);
  $("q").addEventListener("input", typed);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("q").value.trim();
    if (text) run({ text }, true);
  });
  $("pick").addEventListener("change", () => searchImageFile($("pick").files[0]));
  $("clear-query").addEventListener("click", () => run(null, true));
  $("min-score").addEventListener("input", () => {
    const slider = $("min-score");
    state.minScore = slider.value === slider.min ? null : Number(slider.value);
    $("min-score-value").textContent = state.minScore === null ? "off" : state.minScore.toFixed(2);
  });
  $("min-score").addEventListener("change", () => { if (state.query) run(state.query, false); });
  $("where").addEventListener("change", () => { state.where = $("where").value.trim(); if (state.query) run(state.query, false); });
  window.addEventListener("popstate", () => run(queryFromUrl(), false));
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData ? event.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (file) { event.preventDefault(); searchImageFile(file); }
  });
  document.addEventListener("dragover", (event) => { event.preventDefault(); $("drop-hint").hidden = false; });
  document.addEventListener("dragleave", (event) => { if (!event.relatedTarget) $("drop-hint").hidden = true; });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    $("drop-hint").hidden = true;
    searchImageFile(event.dataTransfer && event.dataTransfer.files[0]);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { closeDetail(); return; }
    const typing = ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName);
    if (event.key === "/" && !typing) { event.preventDefault(); $("q").focus(); return; }
    const cards = [...$("results").children];
    if (!cards.length || !$("detail").hidden) return;
    const current = cards.indexOf(document.activeElement);
    const perRow = Math.max(1, Math.round($("results").clientWidth / cards[0].offsetWidth));
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow, ArrowUp: -perRow }[event.key];
    if (step === undefined) return;
    if (typing && event.key !== "ArrowDown") return;
    event.preventDefault();
    cards[Math.min(cards.length - 1, Math.max(0, current < 0 ? 0 : current + step))].focus();
  });
  $("detail-close").addEventListener("click", closeDetail);
  $("detail").addEventListener("click", (event) => { if (event.target === $("detail")) closeDetail(); });
  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("/api/login", { token: $("token").value });
      $("login").hidden = true;
      start();
    } catch (error) { setMessage(`Sign-in failed: ${error.message}`, true); }
  });
  $("more").addEventListener("click", () => { if (state.nextOffset !== null && !state.loading) load(state.nextOffset); });
  new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadMoreIfNear(); },
                           { rootMargin: `0px 0px ${AHEAD_PX}px 0px` }).observe($("sentinel"));
  start();
}

async function start() {
  const query = queryFromUrl();
  showControls(query);  // the shared query is in the box at once, before the service has answered
  try {
    const stats = await api("/api/stats");
    state.kind = stats.kind;
    $("stats").textContent = `${stats.rows.toLocaleString()} ${stats.kind === "image" ? "photos" : "texts"}`;
  } catch (error) {
    setMessage(`The service did not answer: ${error.message}`, true);
    return;
  }
  run(query, false);
}

document.addEventListener("DOMContentLoaded", init);
