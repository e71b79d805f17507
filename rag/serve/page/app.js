// The page at /: asks through the same OpenAI-compatible API a client uses, streams the answer,
// lists each citation with its file, page and passage, and uploads dropped files. No framework,
// no build step, nothing loaded from elsewhere.
"use strict";

(() => {
  const KEY_STORE = "rag-api-key";
  const state = { key: sessionStorage.getItem(KEY_STORE) || "", model: null, messages: [], turns: 0 };
  const $ = (id) => document.getElementById(id);

  function withKey(headers) {
    // X-Requested-With: a server without a key takes uploads and deletions only with it (a page
    // of another site cannot send it), so the page always sends it.
    const all = Object.assign({ "X-Requested-With": "rag-page" }, headers || {});
    if (state.key) all.Authorization = "Bearer " + state.key;
    return all;
  }

  async function api(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = withKey(opts.headers);
    const res = await fetch(path, opts);
    if (res.status === 401) {
      $("key-box").hidden = false;
      $("api-key").focus();
      throw new Error("This server needs its API key: enter it in the key box.");
    }
    if (!res.ok) {
      let message = `${res.status} ${res.statusText}`;
      try {
        message = (await res.json()).error.message;
      } catch (_) { /* not a JSON error body */ }
      throw new Error(message);
    }
    return res;
  }

  function setStatus(text, isError) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", Boolean(isError));
  }

  async function connect() {
    try {
      const models = await (await api("/v1/models")).json();
      state.model = models.data[0].id;
      const index = await (await api("/v1/index")).json();
      setStatus(`${index.documents} documents, ${index.chunks} passages; answering as ${state.model}`);
      $("key-box").hidden = true;
    } catch (err) {
      setStatus(err.message, true);
    }
  }

  function fileName(source) {
    const parts = source.split(/[\\/]/);
    return parts[parts.length - 1];
  }

  function newTurn(question) {
    state.turns += 1;
    const node = $("turn-template").content.firstElementChild.cloneNode(true);
    node.dataset.turn = String(state.turns);
    node.querySelector(".question").textContent = question;
    $("conversation").appendChild(node);
    return node;
  }

  // The answer's text, with each [n] that names a citation linked to it.
  function renderAnswer(turn, text, citations) {
    const box = turn.querySelector(".answer");
    box.replaceChildren();
    const cited = new Set((citations || []).map((c) => c.n));
    let last = 0;
    for (const match of text.matchAll(/\[(\d+)\]/g)) {
      const n = Number(match[1]);
      if (!cited.has(n)) continue;
      box.append(text.slice(last, match.index));
      const link = document.createElement("a");
      link.href = `#cite-${turn.dataset.turn}-${n}`;
      link.textContent = match[0];
      box.append(link);
      last = match.index + match[0].length;
    }
    box.append(text.slice(last));
  }

  function renderCitations(turn, citations) {
    const list = turn.querySelector(".citations");
    list.replaceChildren();
    for (const c of citations) {
      const item = document.createElement("li");
      item.id = `cite-${turn.dataset.turn}-${c.n}`;
      item.value = c.n;
      const where = document.createElement("span");
      where.className = "cite-where";
      let label = fileName(c.source);
      if (c.page !== null && c.page !== undefined) label += `, page ${c.page}`;
      if (c.section) label += ` (${c.section})`;
      where.textContent = label;
      where.title = c.source;
      const passage = document.createElement("p");
      passage.className = "cite-text";
      passage.textContent = c.text;
      item.append(where, passage);
      list.append(item);
    }
  }

  // Reads OpenAI's server-sent events: content deltas, then the citations in the last chunk.
  async function readStream(res, onText) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let text = "";
    let last = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          const content = chunk.choices[0].delta.content;
          if (content) {
            text += content;
            onText(text);
          }
          if (chunk.citations) last = chunk;
        }
      }
    }
    return { text, citations: last ? last.citations : [] };
  }

  async function ask(question) {
    const turn = newTurn(question);
    const messages = state.messages.concat([{ role: "user", content: question }]);
    turn.querySelector(".answer").textContent = "\u2026";
    try {
      const res = await api("/v1/chat/completions", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: state.model, messages, stream: true }),
      });
      const { text, citations } = await readStream(res, (t) => renderAnswer(turn, t, []));
      renderAnswer(turn, text, citations);
      renderCitations(turn, citations);
      turn.classList.add("done");
      state.messages = messages.concat([{ role: "assistant", content: text }]);
    } catch (err) {
      const box = turn.querySelector(".answer");
      box.textContent = err.message;
      box.classList.add("error");
      turn.classList.add("done", "failed");
    }
  }

  async function upload(files) {
    if (!files.length) return;
    const status = $("upload-status");
    status.classList.remove("error");
    status.textContent = `Adding ${files.length} file(s)\u2026`;
    const form = new FormData();
    for (const f of files) form.append("files", f, f.name);
    try {
      const report = await (await api("/v1/documents", { method: "POST", body: form })).json();
      const added = report.documents.filter((d) => !d.skipped).map((d) => d.name);
      const skipped = report.files_skipped.map((s) => `${fileName(s.path)}: ${s.reason}`);
      status.textContent =
        `Added ${added.length} file(s): ${added.join(", ") || "none"}` +
        (skipped.length ? `. Skipped: ${skipped.join("; ")}` : "") +
        ` (${report.chunks_added} passages).`;
      await connect();
    } catch (err) {
      status.textContent = err.message;
      status.classList.add("error");
    }
  }

  $("ask-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (!question) return;
    $("question").value = "";
    $("ask").disabled = true;
    try {
      await ask(question);
    } finally {
      $("ask").disabled = false;
      $("question").focus();
    }
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  $("reset").addEventListener("click", () => {
    state.messages = [];
    $("conversation").replaceChildren();
  });
  $("api-key").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      $("save-key").click();
    }
  });
  $("save-key").addEventListener("click", () => {
    state.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORE, state.key);
    connect();
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    upload(Array.from(event.dataTransfer.files));
  });
  $("file-input").addEventListener("change", (event) => {
    upload(Array.from(event.target.files));
    event.target.value = "";
  });

  connect();
})();
