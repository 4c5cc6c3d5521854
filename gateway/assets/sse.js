// Server-sent events over fetch(), so that the stream can carry an Authorization header
// (EventSource cannot). kiriSse.Parser turns the bytes of a text/event-stream into events as the
// HTML standard describes (lines end in CRLF, LF or CR; `data` lines join with "\n"; a blank
// line ends an event; lines starting with ":" are comments); kiriSse.connect keeps one stream
// open, reconnecting with backoff.
"use strict";

(function () {
  class Parser {
    // onEvent({type, data, id}) is called for each complete event.
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.decoder = new TextDecoder("utf-8");
      this.buffer = "";
      this.afterCR = false; // the chunk before ended in "\r": a leading "\n" belongs to it
      this.first = true;
      this.type = "";
      this.data = [];
      this.lastId = "";
    }

    // Feeds a chunk: a Uint8Array (split anywhere, even inside a character) or a string.
    push(chunk) {
      let text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true });
      if (this.first && text.length > 0) {
        this.first = false;
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      }
      if (text.length === 0) return;
      if (this.afterCR && text[0] === "\n") text = text.slice(1);
      this.afterCR = false;
      const buf = this.buffer + text;
      let start = 0;
      for (let i = 0; i < buf.length; i++) {
        const c = buf[i];
        if (c !== "\n" && c !== "\r") continue;
        this.line(buf.slice(start, i));
        if (c === "\r") {
          if (i + 1 === buf.length) this.afterCR = true;
          else if (buf[i + 1] === "\n") i++;
        }
        start = i + 1;
      }
      this.buffer = buf.slice(start);
    }

    line(line) {
      if (line === "") {
        if (this.data.length > 0) {
          this.onEvent({ type: this.type || "message", data: this.data.join("\n"), id: this.lastId });
        }
        this.type = "";
        this.data = [];
        return;
      }
      if (line[0] === ":") return;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "event") this.type = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id" && !value.includes("\0")) this.lastId = value;
    }
  }

  // Opens `url` and keeps it open: onEvent(event) per event, onState("open" | "down", detail,
  // HTTP status) on changes. headers() is called at each (re)connection, so a new token is picked up.
  // A stream silent for `idleMs` (the server sends a comment every 15 s) counts as dead.
  // Reconnects after 0.5 s, doubling to 30 s, with jitter; returns {close()}.
  function connect(url, { headers, onEvent, onState, idleMs = 45000 }) {
    let stopped = false;
    let controller = null;
    let delay = 500;
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

    async function once() {
      controller = new AbortController();
      const ctl = controller;
      let idle = setTimeout(() => ctl.abort(), idleMs);
      try {
        const resp = await fetch(url, { headers: headers(), signal: ctl.signal, cache: "no-store" });
        if (!resp.ok) {
          const err = new Error("HTTP " + resp.status);
          err.status = resp.status;
          throw err;
        }
        onState("open");
        const parser = new Parser((e) => {
          delay = 500;
          onEvent(e);
        });
        const reader = resp.body.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) throw new Error("the stream ended");
          clearTimeout(idle);
          idle = setTimeout(() => ctl.abort(), idleMs);
          parser.push(value);
        }
      } finally {
        clearTimeout(idle);
      }
    }

    (async () => {
      while (!stopped) {
        try {
          await once();
        } catch (e) {
          if (stopped) return;
          const why = e && e.name === "AbortError" ? "no data for a while" : String(e.message || e);
          onState("down", why, e && e.status);
        }
        await sleep(delay * (0.75 + Math.random() / 2));
        delay = Math.min(delay * 2, 30000);
      }
    })();

    return {
      close() {
        stopped = true;
        if (controller) controller.abort();
      },
    };
  }

  window.kiriSse = { Parser, connect };
})();
