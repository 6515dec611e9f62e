// qhook UI: buttons call the JSON API with the session's CSRF token in a header; the inspector
// page refreshes its captures every 2 s. Text goes into the page with textContent only.
"use strict";

(function () {
  const csrf = (document.querySelector('meta[name="qhook-csrf"]') || {}).content || "";
  // The server's list (domain/credentials.py), so the live inspector redacts what the page does.
  function metaList(name) {
    return new Set(((document.querySelector('meta[name="' + name + '"]') || {}).content || "").split(","));
  }
  const SECRET_HEADERS = metaList("qhook-credential-headers");
  const SECRET_WORDS = metaList("qhook-credential-words");
  function isSecret(name) {
    const lowered = name.toLowerCase();
    return SECRET_HEADERS.has(lowered) || lowered.replace(/_/g, "-").split("-").some((w) => SECRET_WORDS.has(w));
  }

  function flash(message, kind) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.className = "flash " + (kind || "ok");
    box.hidden = false;
  }

  async function api(method, url, body) {
    const headers = { "Accept": "application/json", "X-Qhook-CSRF": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method: method,
      headers: headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      window.location.href = "/ui/login?next=" + encodeURIComponent(window.location.pathname + window.location.search);
      throw new Error("Your session ended; log in again.");
    }
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      throw new Error((data && data.error) || ("HTTP " + response.status));
    }
    return data;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function badgeClass(status) {
    return {
      succeeded: "ok", valid: "ok", pending: "info", retrying: "warn", held: "warn",
      cancelled: "muted", failed: "bad", invalid: "bad",
    }[status] || "muted";
  }

  function pretty(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
  }

  // ISO time from a filter box; no zone means UTC, as the pages show UTC.
  function utc(text) {
    text = (text || "").trim();
    if (!text) return undefined;
    if (/(Z|[+-]\d\d:?\d\d)$/.test(text)) return text;
    if (/^\d{4}-\d\d-\d\d$/.test(text)) return text + "T00:00:00Z"; // a day, as the list reads it
    return text.replace(" ", "T") + "Z";
  }

  function setBusy(button, busy) {
    if (button) button.disabled = busy;
  }

  const actions = {
    async redeliver(button) {
      const id = button.dataset.delivery;
      const done = await api("POST", "/api/v1/deliveries/" + encodeURIComponent(id) + "/redeliver");
      showStatus(done.status);
      const when = done.status === "held"
        ? " and waits for its endpoint's circuit to close (a probe goes now and then)"
        : " and goes out as soon as its endpoint allows";
      flash("Redelivery queued: delivery " + id + " is " + done.status + when +
        ", with the same body and webhook-id. Reload to see its new attempt.", "ok");
      button.disabled = true;
    },
    async cancel(button) {
      const id = button.dataset.delivery;
      if (!window.confirm("Cancel delivery " + id + "? It will not be sent.")) return;
      const done = await api("POST", "/api/v1/deliveries/" + encodeURIComponent(id) + "/cancel");
      showStatus(done.status);
      flash("Delivery " + id + " cancelled.", "ok");
      button.disabled = true;
    },
    async pause(button) {
      await api("POST", "/api/v1/endpoints/" + encodeURIComponent(button.dataset.origin) + "/pause");
      window.location.reload();
    },
    async probe(button) {
      // The worker sends the probe a moment later: reloading at once still showed the circuit
      // open, and nothing said whether the probe had got through.
      const origin = button.dataset.origin;
      await api("POST", "/api/v1/endpoints/" + encodeURIComponent(origin) + "/probe");
      flash("Probe requested: one held delivery to " + origin +
        " goes now. This page reloads when the circuit changes (at most 15 s).", "ok");
      for (let second = 0; second < 15; second++) {
        await new Promise(function (done) { setTimeout(done, 1000); });
        const endpoints = await api("GET", "/api/v1/endpoints");
        const found = (endpoints || []).find(function (e) { return e.origin === origin; });
        if (!found || found.state !== "circuit_open") break;
      }
      window.location.reload();
    },
    async resume(button) {
      await api("POST", "/api/v1/endpoints/" + encodeURIComponent(button.dataset.origin) + "/resume");
      window.location.reload();
    },
    async "resume-signal"(button) {
      const url = "/api/v1/workflows/" + encodeURIComponent(button.dataset.workflow) +
        "/signals/" + encodeURIComponent(button.dataset.signal) + "/resume";
      await api("POST", url);
      window.location.reload();
    },
    async "new-bin"() {
      const made = await api("POST", "/api/v1/inspector/bins", {});
      window.location.href = "/ui/inspector/" + encodeURIComponent(made.id);
    },
  };

  function showStatus(status) {
    const holder = document.getElementById("delivery-status");
    if (!holder) return;
    holder.textContent = "";
    holder.appendChild(el("span", "badge " + badgeClass(status), status));
  }

  document.addEventListener("click", async function (event) {
    const button = event.target.closest("button[data-action]");
    if (!button || !actions[button.dataset.action]) return;
    event.preventDefault();
    setBusy(button, true);
    try {
      await actions[button.dataset.action](button);
    } catch (error) {
      flash(error.message, "bad");
      setBusy(button, false);
      return;
    }
  });

  const forms = {
    async replay(form, outcome) {
      // Every filter of the list goes along (set, result, action, text too: they were dropped,
      // and the replay covered every set), and nothing is queued before the count is confirmed.
      const data = new FormData(form);
      const body = {};
      for (const name of ["status", "endpoint", "action", "q"]) {
        const value = (data.get(name) || "").trim();
        if (value) body[name] = value;
      }
      for (const name of ["workflow_id", "signal_id", "set_id", "result_id"]) {
        const value = (data.get(name) || "").trim();
        if (value && !/^[0-9]+$/.test(value)) {
          // Number("abc") is NaN, sent as null: that filter was dropped and more was replayed.
          throw new Error(name.replace("_id", "").replace(/^./, (c) => c.toUpperCase()) +
            ": a whole number such as 17, or empty.");
        }
        if (value) body[name] = Number(value);
      }
      for (const name of ["since", "until"]) {
        const value = utc(data.get(name));
        if (value) body[name] = value;
      }
      if (Object.keys(body).length === 0) {
        throw new Error("Choose at least one filter (a status, workflow, endpoint or time): " +
          "qhook does not replay every finished delivery at once.");
      }
      const counted = await api("POST", "/api/v1/deliveries/replay", { ...body, dry_run: true });
      if (counted.matched === 0) {
        outcome.textContent = "Nothing to replay: no finished delivery matches.";
        return;
      }
      const many = counted.matched === 1 ? "1 delivery" : counted.matched + " deliveries";
      if (!window.confirm("Send " + many + " again to their receivers?")) {
        outcome.textContent = "Not replayed.";
        return;
      }
      const done = await api("POST", "/api/v1/deliveries/replay", body);
      outcome.textContent = done.queued === 1 ? "Queued 1 delivery." : "Queued " + done.queued + " deliveries.";
    },
    async password(form, outcome) {
      const data = new FormData(form);
      const fresh = data.get("new_password") || "";
      if (fresh !== (data.get("repeat_password") || "")) {
        throw new Error("The new passwords differ; type the same one twice.");
      }
      await api("POST", "/api/v1/me/password", {
        current_password: data.get("current_password") || "", new_password: fresh,
      });
      form.reset();
      outcome.textContent = "Password changed; your other sessions were logged out.";
    },
    async "run-workflow"(form, outcome) {
      const url = "/api/v1/workflows/" + encodeURIComponent(form.dataset.workflow) + "/run";
      const done = await api("POST", url, { result_ids: [Number(form.dataset.result)] });
      const [first] = done.results || [];
      outcome.textContent = "";
      if (first && first.fired) {
        outcome.appendChild(el("span", "badge ok", "fired"));
        outcome.appendChild(document.createTextNode(" Its deliveries are in the list above after a reload."));
      } else {
        outcome.appendChild(el("span", "badge muted", "not fired"));
        outcome.appendChild(document.createTextNode(" " + ((first && first.reason) || "no answer")));
      }
    },
    async "send-test"(form, outcome) {
      const data = new FormData(form);
      const body = {};
      const result = (data.get("result_id") || "").trim();
      if (result && !/^[0-9]+$/.test(result)) {
        // Number("abc") is NaN, sent as null: the sample went out as if nothing was typed.
        throw new Error("Result id: a whole number such as 17, or empty for sample data.");
      }
      if (result) body.result_id = Number(result);
      const url = "/api/v1/workflows/" + encodeURIComponent(form.dataset.workflow) +
        "/signals/" + encodeURIComponent(form.dataset.signal) + "/test";
      outcome.textContent = "Sending…";
      const done = await api("POST", url, body);
      renderTest(outcome, done || {});
    },
  };

  function renderTest(outcome, done) {
    const attempt = done.attempt || done;
    outcome.textContent = "";
    const ok = attempt.status_code >= 200 && attempt.status_code < 300;
    const line = el("p");
    line.appendChild(el("span", "badge " + (ok ? "ok" : "bad"),
      attempt.status_code ? "HTTP " + attempt.status_code : (attempt.error_kind || "no answer")));
    if (attempt.duration_ms !== undefined && attempt.duration_ms !== null) {
      line.appendChild(document.createTextNode(" in " + attempt.duration_ms + " ms"));
    }
    outcome.appendChild(line);
    if (attempt.hint) outcome.appendChild(el("p", "hint", attempt.hint));
    if (attempt.error) outcome.appendChild(el("p", "error-text", attempt.error));
    if (attempt.response_body) outcome.appendChild(el("pre", "body", pretty(attempt.response_body)));
    if (done.delivery_id) {
      const link = el("a", "", "See it in the Integration Hub");
      link.href = "/ui/hub/" + encodeURIComponent(done.delivery_id);
      outcome.appendChild(link);
    }
  }

  document.addEventListener("submit", async function (event) {
    const form = event.target.closest("form[data-action]");
    if (!form || !forms[form.dataset.action]) return;
    event.preventDefault();
    const outcome = form.querySelector(".outcome") || el("span");
    const button = form.querySelector("button[type=submit]");
    setBusy(button, true);
    try {
      await forms[form.dataset.action](form, outcome);
    } catch (error) {
      outcome.textContent = "";
      outcome.appendChild(el("span", "error-text", error.message));
    } finally {
      setBusy(button, false);
    }
  });

  // --- the inspector, live ---------------------------------------------------------------------

  function when(iso) {
    const moment = new Date(iso);
    if (isNaN(moment)) return iso;
    return moment.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
  }

  function captureNode(capture) {
    const section = el("section", "capture");
    const title = el("h3");
    title.appendChild(el("span", "method", capture.method));
    title.appendChild(document.createTextNode(" " + capture.path + (capture.query ? "?" + capture.query : "") + " "));
    title.appendChild(el("span", "badge muted", String(capture.status)));
    title.appendChild(document.createTextNode(" "));
    const verdict = capture.signature === "valid" ? "signature valid" : "signature " + capture.signature;
    title.appendChild(el("span", "signature " + badgeClass(capture.signature), verdict));
    title.appendChild(el("span", "muted", " " + when(capture.at) + " · from " + capture.source));
    section.appendChild(title);
    const details = el("details");
    details.appendChild(el("summary", "", "Headers"));
    const table = el("table", "kv");
    Object.keys(capture.headers).sort().forEach(function (name) {
      const row = el("tr");
      row.appendChild(el("th", "", name));
      row.appendChild(el("td", "", isSecret(name) ? "[redacted]" : capture.headers[name]));
      table.appendChild(row);
    });
    details.appendChild(table);
    section.appendChild(details);
    section.appendChild(el("pre", "body", capture.body_encoding === "utf-8" ? pretty(capture.body) : capture.body));
    return section;
  }

  function startInspector(live) {
    const binId = live.dataset.bin;
    const list = document.getElementById("captures");
    const empty = document.getElementById("no-captures");
    let shown = null;
    async function refresh() {
      let captures;
      try {
        captures = await api("GET", "/api/v1/inspector/bins/" + encodeURIComponent(binId) + "/requests?limit=100");
      } catch (error) {
        live.textContent = "Refresh failed (" + error.message + "); trying again in 5 s.";
        window.setTimeout(refresh, 5000);
        return;
      }
      const key = captures.map(function (c) { return c.id; }).join(",");
      if (key !== shown) {
        shown = key;
        list.textContent = "";
        captures.forEach(function (capture) { list.appendChild(captureNode(capture)); });
        empty.hidden = captures.length > 0;
      }
      live.textContent = "Refreshing every 2 s; last " + new Date().toISOString().slice(11, 19) + " UTC.";
      window.setTimeout(refresh, 2000);
    }
    window.setTimeout(refresh, 2000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const live = document.getElementById("live");
    if (live) startInspector(live);
  });
})();
