// mfpipe review: the player, the timeline, decisions and keyboard shortcuts.
// Text from the server is only ever set with textContent (never parsed as HTML).
(() => {
  "use strict";

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const pageKey = ($('meta[name="review-key"]') || {}).content || "";
  const typing = (el) => el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));

  // ------------------------------------------------------------------ help
  const help = $("#help");
  const toggleHelp = () => { if (help) help.hidden = !help.hidden; };
  const helpButton = $("#help-toggle");
  if (helpButton) helpButton.addEventListener("click", toggleHelp);

  // ------------------------------------------------------------------ the song list
  const songRows = $$("table.songs tr.song");
  if (songRows.length || $("#filters")) {
    let at = -1;
    const select = (i) => {
      if (!songRows.length) return;
      at = Math.max(0, Math.min(songRows.length - 1, i));
      songRows.forEach((r, n) => r.classList.toggle("current", n === at));
      songRows[at].scrollIntoView({ block: "nearest" });
    };
    $$("#filters select").forEach((s) => s.addEventListener("change", () => $("#filters").submit()));
    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey || typing(document.activeElement)) return;
      if (e.key === "j" || e.key === "ArrowDown") { select(at + 1); e.preventDefault(); }
      else if (e.key === "k" || e.key === "ArrowUp") { select(at - 1); e.preventDefault(); }
      else if (e.key === "Enter" && at >= 0 && songRows[at].dataset.href) { location.href = songRows[at].dataset.href; }
      else if (e.key === "/") { $("#search").focus(); e.preventDefault(); }
      else if (e.key === "?") { toggleHelp(); }
    });
  }

  // ------------------------------------------------------------------ a song
  const configEl = $("#review-config");
  if (!configEl) return;
  const config = JSON.parse(configEl.textContent);
  const player = $("#player");
  const tracks = $("#tracks");
  const playhead = $("#playhead");
  const duration = () => (isFinite(player.duration) && player.duration > 0 ? player.duration : config.duration) || 0;

  const seek = (t, play = true) => {
    if (!isFinite(t)) return;
    player.currentTime = Math.max(0, t);
    if (play) player.play().catch(() => {});
  };

  // Seeking: anything with data-t (a section, chord, lyric word, caption window), or a place on the timeline.
  document.addEventListener("click", (e) => {
    const target = e.target.closest("[data-t]");
    if (target) { seek(parseFloat(target.dataset.t)); return; }
    if (tracks && tracks.contains(e.target)) {
      const box = tracks.getBoundingClientRect();
      seek(((e.clientX - box.left) / box.width) * duration());
    }
  });

  const lyrics = $$(".lyric");
  const movePlayhead = () => {
    const t = player.currentTime;
    if (playhead && duration()) playhead.style.left = `${(100 * t) / duration()}%`;
    lyrics.forEach((w) => w.classList.toggle("now", Math.abs(parseFloat(w.dataset.t) - t) < 0.25));
  };
  player.addEventListener("timeupdate", movePlayhead);
  player.addEventListener("seeked", movePlayhead);

  let zoom = 1;
  const setZoom = (z) => { zoom = Math.max(1, Math.min(64, z)); tracks.style.width = `${100 * zoom}%`; };
  $("#zoom-in").addEventListener("click", () => setZoom(zoom * 2));
  $("#zoom-out").addEventListener("click", () => setZoom(zoom / 2));

  // ------------------------------------------------------------------ items and decisions
  const items = $$("article.item");
  let current = -1;
  const focusItem = (i, scroll = true) => {
    if (!items.length) return;
    current = Math.max(0, Math.min(items.length - 1, i));
    items.forEach((el, n) => el.classList.toggle("current", n === current));
    if (scroll) items[current].scrollIntoView({ block: "nearest", behavior: "smooth" });
  };
  const itemOf = (el) => el.closest("article.item");
  const playItem = (card) => {
    if (card && card.dataset.itemT !== undefined) seek(parseFloat(card.dataset.itemT));
  };

  const showError = (card, message) => {
    const box = $('[data-role="error"]', card);
    box.textContent = message || "";
    box.hidden = !message;
  };

  const render = (card, review) => {
    card.dataset.state = review.state;
    const who = review.current ? ` · ${review.current.reviewer}` : "";
    const state = $('[data-role="state"]', card);
    state.textContent = review.state + who;
    state.className = `state state-${review.state}`;
    const edited = $('[data-role="edited"]', card);
    const edit = review.edit;
    edited.hidden = !edit;
    if (edit) {
      $('[data-field="reviewer"]', edited).textContent = review.current.reviewer;
      for (const field of ["text", "question", "answer"]) {
        const el = $(`[data-field="${field}"]`, edited);
        if (el) el.textContent = edit[field] || "";
      }
      const options = $('[data-field="options"]', edited);
      if (options) {
        options.replaceChildren(...(edit.options || []).map((o) => {
          const li = document.createElement("li");
          li.textContent = o;
          return li;
        }));
      }
    }
  };

  const decide = async (card, action, edit = null) => {
    const reason = $('[data-role="reason"]', card).value || null;
    showError(card, "");
    let response;
    try {
      response = await fetch("/api/decision", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Review-Key": pageKey },
        body: JSON.stringify({ item: card.dataset.key, sha256: card.dataset.sha, action, reason, edit }),
      });
    } catch (err) {
      showError(card, `not saved: ${err}`);
      return false;
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      showError(card, `not saved: ${body.error || body.detail || response.status}`);
      return false;
    }
    render(card, body.review);
    return true;
  };

  const openEditor = (card) => {
    const form = $('[data-role="editor"]', card);
    form.hidden = false;
    const first = $("textarea", form);
    if (first) first.focus();
  };
  const closeEditor = (card) => { $('[data-role="editor"]', card).hidden = true; card.focus(); };

  const editPayload = (card) => {
    const form = $('[data-role="editor"]', card);
    const value = (name) => { const el = form.elements.namedItem(name); return el ? el.value : undefined; };
    if (card.dataset.kind === "qa") {
      const options = value("options");
      return { question: value("question"), answer: value("answer"),
               options: options === undefined ? [] : options.split("\n").map((o) => o.trim()).filter(Boolean) };
    }
    return { text: value("text") };
  };

  items.forEach((card, n) => {
    card.addEventListener("click", (e) => {
      if (!e.target.closest("button, select, textarea, input, a, [data-t]")) focusItem(n);
    });
    card.addEventListener("focusin", () => { if (current !== n) focusItem(n); });
    $$("button[data-action]", card).forEach((button) => button.addEventListener("click", async () => {
      const action = button.dataset.action;
      focusItem(n);
      if (action === "play") playItem(card);
      else if (action === "edit") openEditor(card);
      else if (action === "cancel") closeEditor(card);
      else await decide(card, action);
    }));
    const form = $('[data-role="editor"]', card);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (await decide(card, "edit", editPayload(card))) closeEditor(card);
    });
    form.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
      else if (e.key === "Escape") { e.preventDefault(); closeEditor(card); }
    });
  });

  const go = (url) => { if (url) location.href = url; };
  document.addEventListener("keydown", async (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(document.activeElement)) return;
    const card = items[current];
    switch (e.key) {
      case "j": focusItem(current + 1); break;
      case "k": focusItem(current - 1); break;
      case "n": go(config.next); break;
      case "p": go(config.prev); break;
      case "t": playItem(card); break;
      case " ": if (player.paused) player.play().catch(() => {}); else player.pause(); break;
      case "ArrowLeft": seek(player.currentTime - 5, !player.paused); break;
      case "ArrowRight": seek(player.currentTime + 5, !player.paused); break;
      case "?": toggleHelp(); break;
      case "y": case "x":
        if (card && await decide(card, e.key === "y" ? "keep" : "drop")) focusItem(current + 1);
        break;
      case "e": if (card) openEditor(card); break;
      default:
        if (card && /^[0-9]$/.test(e.key)) {
          const select = $('[data-role="reason"]', card);
          const index = e.key === "0" ? 10 : parseInt(e.key, 10);
          if (index < select.options.length) select.selectedIndex = index;
        } else return;
    }
    e.preventDefault();
  });
  if (items.length) focusItem(0, false);
})();
