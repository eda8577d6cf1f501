// The web console: a page of the management API's origin, no build step, no CDN.
// It logs in with the OpenID Connect authorization code flow and PKCE (client `console`),
// keeps its tokens in the tab's sessionStorage, refreshes them before they expire, and
// calls the same API as drg.
"use strict";

const CLIENT = "console";
const CALLBACK = location.origin + "/console/callback";
const state = { endpoints: null, oidc: null, timer: null };
const $ = (sel) => document.querySelector(sel);

// ---- elements ---------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function show(...children) {
  const main = $("#main");
  main.replaceChildren(...children);
}

function fail(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(fail.timer);
  fail.timer = setTimeout(() => (box.hidden = true), 8000);
}

function copyable(id, text) {
  return h("div", { class: "cmd" },
    h("pre", { id }, text),
    h("button", { class: "plain", onclick: () => navigator.clipboard.writeText(text).catch(() => fail("The browser did not let the console copy.")) }, "Copy"));
}

// ---- tokens -----------------------------------------------------------------------

function tokens() {
  try { return JSON.parse(sessionStorage.getItem("tokens")); } catch { return null; }
}

function keep(t) {
  t.expires_at = Date.now() + t.expires_in * 1000;
  sessionStorage.setItem("tokens", JSON.stringify(t));
  schedule();
}

function schedule() {
  clearTimeout(state.timer);
  const t = tokens();
  if (!t) return;
  // refresh 30 s before the access token expires, or halfway through a shorter lifetime
  // (never in a loop: a token good for less than a minute is refreshed at its half-life)
  const lead = Math.min(30000, (t.expires_in * 1000) / 2);
  const wait = Math.max(1000, t.expires_at - Date.now() - lead);
  state.timer = setTimeout(() => refresh().catch((e) => fail(e.message)), wait);
}

async function refresh() {
  const t = tokens();
  if (!t) return;
  const body = new URLSearchParams({ grant_type: "refresh_token", refresh_token: t.refresh_token, client_id: CLIENT });
  const r = await fetch(state.oidc.token_endpoint, { method: "POST", body });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) {
    sessionStorage.removeItem("tokens");
    throw new Error("Your session ended (" + (answer.error_description || r.status) + "): log in again.");
  }
  keep(Object.assign({}, answer, { id_token: answer.id_token || t.id_token }));
}

function b64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function login() {
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const st = b64url(crypto.getRandomValues(new Uint8Array(16)));
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem("pkce", JSON.stringify({ verifier, state: st, back: location.hash || "#/" }));
  const q = new URLSearchParams({
    response_type: "code", client_id: CLIENT, redirect_uri: CALLBACK, scope: "openid offline_access",
    state: st, code_challenge: challenge, code_challenge_method: "S256",
  });
  location.assign(state.oidc.authorization_endpoint + "?" + q);
}

async function callback() {
  const q = new URLSearchParams(location.search);
  const pkce = JSON.parse(sessionStorage.getItem("pkce") || "null");
  sessionStorage.removeItem("pkce");
  if (q.get("error")) throw new Error("Login failed: " + (q.get("error_description") || q.get("error")));
  if (!pkce || q.get("state") !== pkce.state) throw new Error("Login failed: the answer is not for this tab's login (state differs).");
  const body = new URLSearchParams({
    grant_type: "authorization_code", code: q.get("code") || "", redirect_uri: CALLBACK,
    client_id: CLIENT, code_verifier: pkce.verifier,
  });
  const r = await fetch(state.oidc.token_endpoint, { method: "POST", body });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error("Login failed: " + (answer.error_description || r.status));
  keep(answer);
  history.replaceState(null, "", "/" + pkce.back);
}

function logout() {
  const t = tokens();
  sessionStorage.removeItem("tokens");
  clearTimeout(state.timer);
  const q = new URLSearchParams({ client_id: CLIENT, post_logout_redirect_uri: location.origin + "/" });
  if (t) q.set("id_token_hint", t.id_token);
  location.assign((state.oidc.end_session_endpoint || location.origin + "/") + "?" + q);
}

function claims() {
  const t = tokens();
  if (!t) return null;
  try { return JSON.parse(atob(t.access_token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))); } catch { return null; }
}

// ---- the API ----------------------------------------------------------------------

async function api(method, path, body, raw) {
  const t = tokens();
  if (t && t.expires_at - Date.now() < 5000) await refresh();
  const headers = { authorization: "Bearer " + tokens().access_token };
  let payload;
  if (body !== undefined) {
    payload = raw ? body : JSON.stringify(body);
    headers["content-type"] = raw ? "application/octet-stream" : "application/json";
  }
  const r = await fetch(path, { method, headers, body: payload });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!r.ok) {
    const words = (json && (json.message || json.error)) || text || r.statusText;
    const e = new Error(r.status === 409
      ? "Someone changed this in the meantime (conflict): reload it and apply your change again. " + words
      : r.status + " " + words);
    e.status = r.status;
    throw e;
  }
  return json;
}

const REG = "/api/registry/v1alpha1";
const enc = encodeURIComponent;

// ---- pages ------------------------------------------------------------------------

function endpointsOf() {
  const e = state.endpoints || {};
  const http = (e.http && e.http.url) || location.origin;
  const mqtt = e.mqtt ? e.mqtt : null;
  const coap = e.coap ? e.coap.url : null;
  return { http, mqtt, coap, api: e.api || location.origin };
}

function gettingStarted() {
  const form = h("form", { id: "start", class: "row", onsubmit: (ev) => { ev.preventDefault(); render(); } },
    h("label", {}, "Application ", h("input", { id: "gs-app", value: "app1" })),
    h("label", {}, "Device ", h("input", { id: "gs-device", value: "device1" })),
    h("label", {}, "Password ", h("input", { id: "gs-password", value: "hey-rodney" })),
    h("label", {}, "Payload ", h("input", { id: "gs-payload", value: '{"temp": 42}' })),
    h("button", { type: "submit" }, "Show the commands"));
  const out = h("div", { id: "gs-commands" });
  function render() {
    const app = $("#gs-app").value, dev = $("#gs-device").value, pw = $("#gs-password").value;
    const payload = $("#gs-payload").value;
    const ep = endpointsOf();
    const q = (s) => "'" + s.replace(/'/g, "'\\''") + "'";
    const spec = JSON.stringify({ authentication: { credentials: [{ pass: pw }] } });
    const parts = [
      h("h3", {}, "1. Register the application and the device"),
      copyable("cmd-drg", `drg login ${ep.api}\ndrg create app ${app}\ndrg create device --app ${app} ${dev} --spec ${q(spec)}`),
      h("h3", {}, "2. Publish as the device"),
      h("p", {}, "curl:"),
      copyable("cmd-curl", `curl -u ${q(dev + "@" + app + ":" + pw)} -H 'content-type: application/json' -d ${q(payload)} ${ep.http}/v1/telemetry`),
      h("p", {}, "HTTPie:"),
      copyable("cmd-httpie", `http --auth ${q(dev + "@" + app + ":" + pw)} POST ${ep.http}/v1/telemetry <<< ${q(payload)}`),
    ];
    if (ep.mqtt) {
      parts.push(h("p", {}, "Mosquitto:"),
        copyable("cmd-mqtt", `mosquitto_pub -h ${ep.mqtt.host} -p ${ep.mqtt.port} -u ${q(dev + "@" + app)} -P ${q(pw)} -t telemetry -m ${q(payload)}`));
    }
    if (ep.coap) {
      const auth = btoa(dev + "@" + app + ":" + pw);
      parts.push(h("p", {}, "CoAP (libcoap):"),
        copyable("cmd-coap", `coap-client -m post -O 4209,${q("Basic " + auth)} -e ${q(payload)} ${ep.coap}/v1/telemetry`));
    }
    parts.push(
      h("h3", {}, "3. Consume the events"),
      copyable("cmd-stream", `drg stream --app ${app}`),
      h("p", {}, "or watch them live on ", h("a", { href: `#/apps/${enc(app)}/events` }, "the application's events page"), "."),
      h("h3", {}, "4. Send a command"),
      copyable("cmd-command", `drg cmd --app ${app} set-temp ${dev} --payload ${q(payload)}`),
      h("p", {}, "The device receives it when it waits for commands, e.g. ", h("code", {}, "?ct=30"), " on its HTTP publish."));
    out.replaceChildren(...parts);
  }
  show(h("section", {}, h("h1", {}, "Getting started"),
    h("p", { class: "note" }, "Fill in your names; the commands below are for this deployment."), form), out);
  render();
}

async function appsPage() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const labels = params.get("labels") || "";
  const offset = Number(params.get("offset") || 0);
  const limit = 20;
  const q = new URLSearchParams({ limit: limit + 1, offset });
  if (labels) labels.split(",").filter(Boolean).forEach((l) => q.append("labels", l.trim()));
  const apps = await api("GET", `${REG}/apps?${q}`);
  const more = apps.length > limit;
  const rows = apps.slice(0, limit).map((a) => h("tr", {},
    h("td", {}, h("a", { href: `#/apps/${enc(a.metadata.name)}` }, a.metadata.name)),
    h("td", {}, Object.entries(a.metadata.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
    h("td", {}, a.metadata.creationTimestamp || "")));
  const go = (off) => { location.hash = `#/apps?labels=${enc(labels)}&offset=${off}`; };
  show(
    h("section", {}, h("h1", {}, "Applications"),
      h("form", { class: "row", onsubmit: async (ev) => {
        ev.preventDefault();
        const name = $("#new-app").value.trim();
        try { await api("POST", `${REG}/apps`, { metadata: { name } }); location.hash = `#/apps/${enc(name)}`; } catch (e) { fail(e.message); }
      } }, h("input", { id: "new-app", placeholder: "name", required: true }), h("button", { id: "create-app" }, "Create")),
      h("form", { class: "row", onsubmit: (ev) => { ev.preventDefault(); location.hash = `#/apps?labels=${enc($("#labels").value)}`; } },
        h("label", {}, "Label selector ", h("input", { id: "labels", value: labels, placeholder: "floor=1,env!=test" })), h("button", { class: "plain" }, "Filter"))),
    h("section", {}, h("table", { id: "apps" }, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Labels"), h("th", {}, "Created")), rows),
      rows.length ? null : h("p", { class: "note" }, "No applications."),
      h("div", { class: "row" },
        offset > 0 ? h("button", { class: "plain", onclick: () => go(Math.max(0, offset - limit)) }, "Previous") : null,
        more ? h("button", { class: "plain", onclick: () => go(offset + limit) }, "Next") : null)));
}

function editor(id, object, onsave, ondelete) {
  const area = h("textarea", { id }, JSON.stringify(object, null, 2));
  return h("div", {}, area, h("div", { class: "row" },
    h("button", { id: id + "-save", onclick: async () => {
      let value;
      try { value = JSON.parse(area.value); } catch (e) { return fail("That is not JSON: " + e.message); }
      try { await onsave(value); } catch (e) { fail(e.message); }
    } }, "Save"),
    ondelete ? h("button", { class: "danger", id: id + "-delete", onclick: async () => {
      if (!confirm("Delete it?")) return;
      try { await ondelete(); } catch (e) { fail(e.message); }
    } }, "Delete") : null));
}

async function appPage(app) {
  const a = await api("GET", `${REG}/apps/${enc(app)}`);
  const devices = await api("GET", `${REG}/apps/${enc(app)}/devices`);
  const saved = h("span", { class: "ok", id: "saved" });
  show(
    h("section", {}, h("h1", {}, "Application ", app),
      h("p", {}, h("a", { href: `#/apps/${enc(app)}/events` }, "Live events"), " · ",
        h("a", { href: `#/apps/${enc(app)}/members` }, "Members")),
      editor("app-spec", a, async (value) => {
        await api("PUT", `${REG}/apps/${enc(app)}`, value);
        saved.textContent = "Saved.";
        setTimeout(() => route(), 500);
      }, async () => { await api("DELETE", `${REG}/apps/${enc(app)}`); location.hash = "#/apps"; }), saved),
    h("section", {}, h("h2", {}, "Devices"),
      h("form", { class: "row", onsubmit: async (ev) => {
        ev.preventDefault();
        const name = $("#new-device").value.trim();
        const password = $("#new-device-password").value;
        const spec = password ? { authentication: { credentials: [{ pass: password }] } } : {};
        try { await api("POST", `${REG}/apps/${enc(app)}/devices`, { metadata: { name, application: app }, spec }); route(); } catch (e) { fail(e.message); }
      } }, h("input", { id: "new-device", placeholder: "name", required: true }),
        h("input", { id: "new-device-password", placeholder: "password (optional)" }), h("button", { id: "create-device" }, "Create")),
      h("table", { id: "devices" }, h("tr", {}, h("th", {}, "Device"), h("th", {}, "")),
        devices.map((d) => h("tr", {},
          h("td", {}, h("a", { href: `#/apps/${enc(app)}/devices/${enc(d.metadata.name)}` }, d.metadata.name)),
          h("td", {}, h("a", { href: `#/apps/${enc(app)}/devices/${enc(d.metadata.name)}/command` }, "Send a command")))))));
}

async function devicePage(app, device) {
  const d = await api("GET", `${REG}/apps/${enc(app)}/devices/${enc(device)}`);
  show(h("section", {}, h("h1", {}, "Device ", device, " of ", h("a", { href: `#/apps/${enc(app)}` }, app)),
    editor("device-spec", d, async (value) => { await api("PUT", `${REG}/apps/${enc(app)}/devices/${enc(device)}`, value); route(); },
      async () => { await api("DELETE", `${REG}/apps/${enc(app)}/devices/${enc(device)}`); location.hash = `#/apps/${enc(app)}`; })));
}

function commandPage(app, device) {
  const result = h("p", { id: "command-result" });
  show(h("section", {}, h("h1", {}, "Send a command to ", device),
    h("form", { class: "row", onsubmit: async (ev) => {
      ev.preventDefault();
      const name = $("#command-name").value.trim();
      try {
        await api("POST", `/api/command/v1alpha1/apps/${enc(app)}/devices/${enc(device)}?command=${enc(name)}`, $("#command-payload").value, true);
        result.className = "ok";
        result.textContent = `Command ${name} accepted: the device gets it when it next waits for commands. Its answer appears among the application's events.`;
      } catch (e) { result.className = ""; fail(e.message); }
    } }, h("label", {}, "Command ", h("input", { id: "command-name", required: true, value: "set-temp" })),
      h("label", {}, "Payload ", h("input", { id: "command-payload", value: '{"target": 21}' })),
      h("button", { id: "send-command" }, "Send")), result,
    h("p", {}, h("a", { href: `#/apps/${enc(app)}/events` }, "Watch the events"))));
}

function eventsPage(app) {
  const list = h("div", { class: "events", id: "events" });
  let paused = false, socket = null;
  const filter = h("input", { id: "event-filter", placeholder: "device or text" });
  const pause = h("button", { class: "plain", id: "pause", onclick: () => { paused = !paused; pause.textContent = paused ? "Resume" : "Pause"; } }, "Pause");
  const status = h("span", { class: "note", id: "stream-status" }, "connecting…");
  show(h("section", {}, h("h1", {}, "Events of ", h("a", { href: `#/apps/${enc(app)}` }, app)),
    h("div", { class: "row" }, filter, pause, status), list));
  const open = async () => {
    if (tokens().expires_at - Date.now() < 5000) await refresh();
    const url = location.origin.replace(/^http/, "ws") + `/stream/${enc(app)}?token=${enc(tokens().access_token)}`;
    socket = new WebSocket(url);
    socket.onopen = () => (status.textContent = "live");
    socket.onclose = (ev) => {
      status.textContent = "closed" + (ev.reason ? ": " + ev.reason : "");
      if (location.hash === `#/apps/${enc(app)}/events` && ev.code !== 1008) setTimeout(open, 2000);
    };
    socket.onmessage = (ev) => {
      if (paused) return;
      const text = String(ev.data);
      const f = filter.value.trim();
      if (f && !text.includes(f)) return;
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch { /* as sent */ }
      list.prepend(h("pre", { class: "event" }, shown));
      while (list.children.length > 200) list.lastChild.remove();
    };
  };
  open().catch((e) => fail(e.message));
  window.addEventListener("hashchange", () => socket && socket.close(), { once: true });
}

async function membersPage(app) {
  const members = await api("GET", `/api/admin/v1alpha1/apps/${enc(app)}/members`);
  show(h("section", {}, h("h1", {}, "Members of ", h("a", { href: `#/apps/${enc(app)}` }, app)),
    h("p", { class: "note" }, "Roles: admin, manager, reader. Saving replaces the list (optimistic locking by resourceVersion)."),
    editor("members", members, async (value) => { await api("PUT", `/api/admin/v1alpha1/apps/${enc(app)}/members`, value); route(); })));
}

async function tokensPage() {
  const list = await api("GET", "/api/tokens/v1alpha1");
  const created = h("div", { id: "new-token" });
  show(h("section", {}, h("h1", {}, "Access tokens"),
    h("form", { class: "row", onsubmit: async (ev) => {
      ev.preventDefault();
      const description = $("#token-description").value;
      try {
        const t = await api("POST", "/api/tokens/v1alpha1" + (description ? "?description=" + enc(description) : ""));
        created.replaceChildren(h("div", { class: "secret" },
          h("p", {}, "Your new token. It is shown this once:"), copyable("token-value", t.token)));
        const again = await api("GET", "/api/tokens/v1alpha1");
        $("#tokens").replaceWith(tokenTable(again));
      } catch (e) { fail(e.message); }
    } }, h("input", { id: "token-description", placeholder: "description" }), h("button", { id: "create-token" }, "Create")), created),
    h("section", {}, tokenTable(list)));
}

function tokenTable(list) {
  return h("table", { id: "tokens" }, h("tr", {}, h("th", {}, "Prefix"), h("th", {}, "Description"), h("th", {}, "Created"), h("th", {}, "")),
    list.map((t) => h("tr", {}, h("td", {}, t.prefix), h("td", {}, t.description || ""), h("td", {}, t.created || ""),
      h("td", {}, h("button", { class: "danger", "data-prefix": t.prefix, onclick: async () => {
        try { await api("DELETE", "/api/tokens/v1alpha1/" + enc(t.prefix)); route(); } catch (e) { fail(e.message); }
      } }, "Delete")))));
}

// ---- routing ----------------------------------------------------------------------

async function route() {
  const hash = location.hash.replace(/^#/, "").split("?")[0] || "/";
  const parts = hash.split("/").filter(Boolean).map(decodeURIComponent);
  if (!tokens()) {
    show(h("section", {}, h("h1", {}, "Welcome"), h("p", {}, "Log in to manage your applications and devices."),
      h("button", { id: "login", onclick: () => login().catch((e) => fail(e.message)) }, "Log in")));
    $("#user").replaceChildren();
    return;
  }
  const c = claims() || {};
  $("#user").replaceChildren(h("span", { id: "username" }, c.preferred_username || c.sub || ""),
    h("button", { class: "plain", id: "logout", onclick: logout }, "Log out"));
  try {
    if (parts.length === 0) return gettingStarted();
    if (parts[0] === "tokens") return await tokensPage();
    if (parts[0] === "apps" && parts.length === 1) return await appsPage();
    if (parts[0] === "apps" && parts.length === 2) return await appPage(parts[1]);
    if (parts[0] === "apps" && parts[2] === "events") return eventsPage(parts[1]);
    if (parts[0] === "apps" && parts[2] === "members") return await membersPage(parts[1]);
    if (parts[0] === "apps" && parts[2] === "devices" && parts[4] === "command") return commandPage(parts[1], parts[3]);
    if (parts[0] === "apps" && parts[2] === "devices" && parts.length === 4) return await devicePage(parts[1], parts[3]);
    show(h("section", {}, h("h1", {}, "Not found"), h("p", {}, "There is no such page.")));
  } catch (e) {
    show(h("section", {}, h("h1", {}, "Cannot show this page"), h("p", { class: "error-text" }, e.message)));
    fail(e.message);
  }
}

async function start() {
  const started = performance.now();
  state.endpoints = await (await fetch("/.well-known/drogue-endpoints")).json();
  state.oidc = await (await fetch(state.endpoints.issuer_url.replace(/\/$/, "") + "/.well-known/openid-configuration")).json();
  if (location.pathname === "/console/callback") await callback();
  schedule();
  window.addEventListener("hashchange", route);
  await route();
  document.body.dataset.rendered = String(Math.round(performance.now() - started));
}

start().catch((e) => { show(h("section", {}, h("h1", {}, "The console cannot start"), h("p", {}, e.message))); fail(e.message); });
