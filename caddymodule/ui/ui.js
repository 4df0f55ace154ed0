// cc-relay status page: polls its own JSON (?format=json, relative to the
// page, so any route prefix works) and renders it with DOM calls only —
// nothing from the relay is ever parsed as HTML.
"use strict";

(function () {
  const POLL_MS = 1500;
  const pools = document.getElementById("pools");
  const conn = document.getElementById("conn");
  const updated = document.getElementById("updated");
  const notice = document.getElementById("notice");
  let csrf = "";
  let serverSkew = 0; // relay time minus browser time, ms

  // el("td", {class: "n", "data-label": "In flight"}, child, "text", ...)
  function el(tag, attrs) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const k of Object.keys(attrs)) {
        if (attrs[k] !== undefined && attrs[k] !== null && attrs[k] !== false) e.setAttribute(k, attrs[k]);
      }
    }
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c === undefined || c === null || c === false) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  function fmtNum(n) {
    if (typeof n !== "number" || !isFinite(n)) return "–";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 0 : 1).replace(/\.0$/, "") + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1).replace(/\.0$/, "") + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(a >= 1e5 ? 0 : 1).replace(/\.0$/, "") + "k";
    return String(n);
  }

  function fmtDur(ms) {
    let s = Math.max(0, Math.round(ms / 1000));
    if (s < 90) return s + " s";
    const m = Math.round(s / 60);
    if (m < 90) return m + " min";
    const h = Math.round(m / 60);
    if (h < 48) return h + " h";
    return Math.round(h / 24) + " d";
  }

  function fmtTime(iso, nowMs) {
    const t = new Date(iso);
    if (isNaN(t)) return String(iso);
    const sameDay = Math.abs(t.getTime() - nowMs) < 20 * 3600 * 1000;
    const opts = sameDay ? { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }
      : { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    return t.toLocaleString([], opts);
  }

  function relayNow() { return Date.now() + serverSkew; }

  // --- budgets ---

  const BUDGETS = [["requests", "req"], ["input_tokens", "input"], ["output_tokens", "output"]];

  function barRow(label, b) {
    const limit = b && b.configured > 0 ? b.configured : (b && b.learned > 0 ? b.learned : 0);
    const source = b && b.configured > 0 ? "configured" : (b && b.learned > 0 ? "learned" : "");
    const bar = el("span", { class: "bar", role: "meter" });
    const fill = el("span");
    bar.appendChild(fill);
    let text;
    if (limit > 0 && b.remaining !== -1) { // -1: not known yet
      const used = limit - b.remaining;
      const share = Math.min(1, Math.max(0, used / limit));
      // CSSOM, not a style attribute: the CSP admits no inline style.
      fill.style.width = (share * 100).toFixed(1) + "%";
      if (share >= 0.95) bar.classList.add("full");
      else if (share >= 0.75) bar.classList.add("hi");
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", String(limit));
      bar.setAttribute("aria-valuenow", String(Math.max(0, used)));
      text = fmtNum(used) + " / " + fmtNum(limit);
    } else if (limit > 0) {
      text = "? / " + fmtNum(limit);
      bar.classList.add("unknown");
    } else {
      text = "no limit known";
      bar.classList.add("unknown");
    }
    return el("div", { class: "bar-row", "data-budget": label },
      el("span", { class: "bar-label" }, label),
      bar,
      el("span", { class: "bar-text" }, text),
      el("span", { class: "src" }, source));
  }

  function budgetsCell(k) {
    const td = el("td", { class: "budgets", "data-label": "Budgets / min" });
    const list = k.budgets || [];
    if (list.length === 0) {
      td.appendChild(el("span", { class: "small" }, "no traffic yet"));
      return td;
    }
    for (const b of list) {
      const head = el("div", null, el("span", { class: "klass-name" }, b.class));
      if (b.cooling_until) {
        head.appendChild(el("span", { class: "klass-cool" },
          "cooling " + fmtDur(new Date(b.cooling_until).getTime() - relayNow()) + (b.cool_reason ? " · " + b.cool_reason : "")));
      }
      const box = el("div", { class: "klass", "data-class": b.class }, head);
      const known = BUDGETS.some(function (x) { const v = b[x[0]]; return v && (v.configured > 0 || v.learned > 0); });
      if (known) {
        for (const [field, label] of BUDGETS) box.appendChild(barRow(label, b[field]));
      } else {
        box.appendChild(el("span", { class: "small" }, "no limit known yet"));
      }
      td.appendChild(box);
    }
    return td;
  }

  // --- keys ---

  function stateCell(k) {
    const td = el("td", { class: "state-cell", "data-label": "State" },
      el("span", { class: "state state-" + k.state, "data-state": k.state }, k.state));
    if (k.until) {
      const ms = new Date(k.until).getTime() - relayNow();
      td.appendChild(el("span", { class: "until" }, "until " + fmtTime(k.until, relayNow()) + " (in " + fmtDur(ms) + ")"));
    }
    if (k.reason) td.appendChild(el("span", { class: "reason" }, k.reason));
    return td;
  }

  function keyRow(pool, k, actions) {
    const t = k.totals || {};
    const who = [];
    if (k.org) who.push("org " + k.org);
    if (k.cache_scope && k.cache_scope !== k.org) who.push("scope " + k.cache_scope);
    if (k.priority) who.push("priority " + k.priority);
    if (k.weight && k.weight !== 1) who.push("weight " + k.weight);
    const tr = el("tr", { "data-key": k.name, "data-state": k.state },
      el("td", { class: "key-cell", "data-label": "Key" }, el("span", { class: "key-name" }, k.name), el("span", { class: "small" }, who.join(" · "))),
      stateCell(k),
      budgetsCell(k),
      el("td", { class: "n", "data-label": "In flight" }, fmtNum(k.in_flight || 0)),
      el("td", { class: "n", "data-label": "Sessions" }, fmtNum(k.sticky_sessions || 0)),
      el("td", { class: "n", "data-label": "Requests" }, fmtNum(t.requests || 0),
        el("span", { class: "small" }, "ok " + fmtNum(t.succeeded || 0) + " · 429 " + fmtNum(t.rate_limited || 0) + " · failed " + fmtNum(t.failed || 0))),
      el("td", { class: "n", "data-label": "Tokens" }, "in " + fmtNum(t.input_tokens || 0) + " · out " + fmtNum(t.output_tokens || 0),
        el("span", { class: "small" }, "cache read " + fmtNum(t.cache_read_input_tokens || 0) + " · write " + fmtNum(t.cache_creation_input_tokens || 0))));
    if (actions) {
      const td = el("td", { class: "n", "data-label": "" });
      if (k.state !== "ok") {
        const btn = el("button", { type: "button", "data-enable": k.name }, "Enable");
        btn.addEventListener("click", function () { enableKey(pool, k.name, btn); });
        td.appendChild(btn);
      }
      tr.appendChild(td);
    }
    return tr;
  }

  function sum(keys, f) { return keys.reduce(function (a, k) { return a + (f(k) || 0); }, 0); }

  function keysTable(p, actions) {
    const keys = p.keys || [];
    const head = el("tr", null, el("th", null, "Key"), el("th", null, "State"), el("th", null, "Budgets per minute (used / limit)"),
      el("th", { class: "n" }, "In flight"), el("th", { class: "n" }, "Sessions"), el("th", { class: "n" }, "Requests"), el("th", { class: "n" }, "Tokens"));
    if (actions) head.appendChild(el("th", null, ""));
    const body = el("tbody");
    for (const k of keys) body.appendChild(keyRow(p.name, k, actions));
    const tot = function (f) { return sum(keys, function (k) { return (k.totals || {})[f]; }); };
    const foot = el("tr", { class: "totals" },
      el("td", { "data-label": "" }, "Totals"), el("td", { "data-label": "" }, ""), el("td", { "data-label": "" }, ""),
      el("td", { class: "n", "data-label": "In flight" }, fmtNum(sum(keys, function (k) { return k.in_flight; }))),
      el("td", { class: "n", "data-label": "Sessions" }, fmtNum(p.sticky_sessions || 0)),
      el("td", { class: "n", "data-label": "Requests" }, fmtNum(tot("requests")),
        el("span", { class: "small" }, "ok " + fmtNum(tot("succeeded")) + " · 429 " + fmtNum(tot("rate_limited")) + " · failed " + fmtNum(tot("failed")))),
      el("td", { class: "n", "data-label": "Tokens" }, "in " + fmtNum(tot("input_tokens")) + " · out " + fmtNum(tot("output_tokens")),
        el("span", { class: "small" }, "cache read " + fmtNum(tot("cache_read_input_tokens")) + " · write " + fmtNum(tot("cache_creation_input_tokens")))));
    if (actions) foot.appendChild(el("td", { "data-label": "" }));
    return el("div", { class: "scroll" }, el("table", { class: "keys" }, el("thead", null, head), body, el("tfoot", null, foot)));
  }

  // --- sections other parts of the relay may add (clients, instances) ---

  function flatten(obj, prefix, out) {
    for (const k of Object.keys(obj)) {
      const v = obj[k];
      const name = prefix ? prefix + "." + k : k;
      if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, name, out);
      else out[name] = v;
    }
    return out;
  }

  function cellText(v) {
    if (v === null || v === undefined) return "–";
    if (Array.isArray(v)) return v.map(cellText).join(", ");
    if (typeof v === "number") return Number.isInteger(v) ? fmtNum(v) : String(Math.round(v * 10000) / 10000);
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(v)) return fmtTime(v, relayNow());
    return String(v);
  }

  function genericTable(title, rows) {
    const flat = rows.map(function (r) { return r && typeof r === "object" ? flatten(r, "", {}) : { value: r }; });
    const cols = [];
    for (const r of flat) for (const c of Object.keys(r)) if (cols.indexOf(c) < 0) cols.push(c);
    const nameFirst = cols.indexOf("name");
    if (nameFirst > 0) { cols.splice(nameFirst, 1); cols.unshift("name"); }
    const head = el("tr");
    for (const c of cols) head.appendChild(el("th", null, c.replace(/_/g, " ")));
    const body = el("tbody");
    for (const r of flat) {
      const tr = el("tr");
      for (const c of cols) {
        const v = r[c];
        tr.appendChild(el("td", { class: typeof v === "number" ? "n" : null, "data-col": c }, cellText(v)));
      }
      body.appendChild(tr);
    }
    return el("div", { class: "extra", "data-section": title },
      el("h3", null, title + " (" + rows.length + ")"),
      el("div", { class: "scroll" }, el("table", { class: "generic" }, el("thead", null, head), body)));
  }

  // --- pools ---

  function poolSection(p, actions) {
    const sec = el("section", { class: "pool", "data-pool": p.name });
    const head = el("div", { class: "pool-head" }, el("h2", null, el("span", { class: "label" }, "pool"), p.name));
    sec.appendChild(head);
    if (p.missing) {
      sec.appendChild(el("p", { class: "empty" }, "Not running: the loaded configuration has no cc_relay handler for this pool."));
      return sec;
    }
    const keys = p.keys || [];
    const counts = { ok: 0, cooling: 0, parked: 0, disabled: 0 };
    for (const k of keys) counts[k.state] = (counts[k.state] || 0) + 1;
    const serving = counts.ok > 0;
    head.appendChild(el("span", { class: "verdict " + (serving ? "serving" : "blocked") },
      serving ? counts.ok + " of " + keys.length + " keys ready" : "no key can serve"));
    head.appendChild(el("span", { class: "small" }, "strategy " + (p.strategy || "–")));
    if (p.mode && p.mode !== "local") {
      // Shared on redis: whether this instance is in the shared pool or
      // serving from its share while redis is away.
      head.appendChild(el("span", { class: "small mode", "data-mode": p.mode },
        "redis " + p.mode + " · " + fmtNum(p.instances_alive || 0) + " instances alive"));
    }

    const fact = function (v, k) { return el("li", null, el("span", { class: "v" }, v), el("span", { class: "k" }, k)); };
    sec.appendChild(el("ul", { class: "facts" },
      fact(fmtNum(counts.ok), "ok"), fact(fmtNum(counts.cooling), "cooling"), fact(fmtNum(counts.parked), "parked"),
      fact(fmtNum(counts.disabled), "disabled"), fact(fmtNum(sum(keys, function (k) { return k.in_flight; })), "in flight"),
      fact(fmtNum(p.waiting || 0), "waiting"), fact(fmtNum(p.sticky_sessions || 0), "pinned sessions")));
    sec.appendChild(keysTable(p, actions));
    if (Array.isArray(p.clients) && p.clients.length) sec.appendChild(genericTable("clients", p.clients));
    if (Array.isArray(p.instances) && p.instances.length) sec.appendChild(genericTable("instances", p.instances));
    return sec;
  }

  function render(st) {
    serverSkew = new Date(st.now).getTime() - Date.now();
    csrf = st.csrf || "";
    const frag = document.createDocumentFragment();
    const list = st.pools || [];
    if (list.length === 0) frag.appendChild(el("p", { class: "empty" }, "No pool is running."));
    for (const p of list) frag.appendChild(poolSection(p, !!st.actions));
    pools.replaceChildren(frag);
    document.body.setAttribute("data-rendered", "1");
    conn.dataset.state = "live";
    conn.textContent = "live";
    updated.textContent = "· relay time " + fmtTime(st.now, relayNow());
  }

  function say(text, bad) {
    notice.textContent = text;
    notice.classList.toggle("bad", !!bad);
    notice.hidden = false;
  }

  async function enableKey(pool, key, btn) {
    if (!window.confirm("Enable key " + key + " of pool " + pool + "?\nThis clears its cooldowns, its organization's park and its disabled state.")) return;
    btn.disabled = true;
    try {
      const res = await fetch("?action=enable", {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: { "Content-Type": "application/json", "X-CC-Relay-CSRF": csrf },
        body: JSON.stringify({ pool: pool, key: key }),
      });
      const body = await res.json().catch(function () { return null; });
      if (res.ok) say("Enabled key " + key + " of pool " + pool + ": now " + (body && body.key ? body.key.state : "ok") + ".");
      else say("Could not enable " + key + ": " + (body && body.error ? body.error.message : "HTTP " + res.status), true);
    } catch (e) {
      say("Could not enable " + key + ": " + e.message, true);
    }
    poll();
  }

  let timer = 0;
  async function poll() {
    clearTimeout(timer);
    try {
      const res = await fetch("?format=json", { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error("HTTP " + res.status);
      render(await res.json());
    } catch (e) {
      conn.dataset.state = "lost";
      conn.textContent = "connection lost (" + e.message + "), retrying";
    }
    timer = setTimeout(poll, POLL_MS);
  }

  poll();
})();
