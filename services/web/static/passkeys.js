// Passkey ceremonies for Mamoru's pages: the server's options (JSON, binary fields
// as base64url) become WebAuthn calls, and the credential goes back as JSON.
// First-party and dependency-free, so the pages load no third-party script.
"use strict";
(function () {
  function toBuffer(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "===".slice((base64.length + 3) % 4);
    const bytes = atob(padded);
    const out = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) out[i] = bytes.charCodeAt(i);
    return out.buffer;
  }

  function toText(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function csrf() {
    return document.querySelector('meta[name="csrf-token"]').content;
  }

  async function post(url, body) {
    const reply = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body || {}),
    });
    const data = await reply.json();
    if (!reply.ok) throw new Error(data.error || "refused");
    return data;
  }

  function creationOptions(json) {
    const o = json.publicKey || json;
    o.challenge = toBuffer(o.challenge);
    o.user.id = toBuffer(o.user.id);
    (o.excludeCredentials || []).forEach(function (c) { c.id = toBuffer(c.id); });
    return o;
  }

  function requestOptions(json) {
    const o = json.publicKey || json;
    o.challenge = toBuffer(o.challenge);
    (o.allowCredentials || []).forEach(function (c) { c.id = toBuffer(c.id); });
    return o;
  }

  function attestationJson(credential) {
    const r = credential.response;
    return JSON.stringify({
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        clientDataJSON: toText(r.clientDataJSON),
        attestationObject: toText(r.attestationObject),
        transports: r.getTransports ? r.getTransports() : [],
      },
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment,
    });
  }

  function assertionJson(credential) {
    const r = credential.response;
    return JSON.stringify({
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: toText(r.authenticatorData),
        clientDataJSON: toText(r.clientDataJSON),
        signature: toText(r.signature),
        userHandle: r.userHandle ? toText(r.userHandle) : null,
      },
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment,
    });
  }

  function failed() {
    const box = document.getElementById("passkey-error");
    if (box) box.hidden = false;
  }

  let conditional = null;

  async function signIn(button, mediation) {
    const options = requestOptions(await post(button.dataset.options));
    const request = { publicKey: options };
    if (mediation) {
      conditional = new AbortController();
      request.mediation = mediation;
      request.signal = conditional.signal;
    }
    const credential = await navigator.credentials.get(request);
    const done = await post(button.dataset.finish, { credential: assertionJson(credential) });
    window.location.assign(done.next);
  }

  async function register(button) {
    const options = creationOptions(await post(button.dataset.options));
    const credential = await navigator.credentials.create({ publicKey: options });
    const name = document.getElementById("passkey-name");
    const done = await post(button.dataset.finish, {
      credential: attestationJson(credential),
      name: name ? name.value : "",
    });
    window.location.assign(done.next);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.PublicKeyCredential) return;
    ["passkey-sign-in", "passkey-second-factor", "passkey-step-up"].forEach(function (id) {
      const button = document.getElementById(id);
      if (!button) return;
      button.addEventListener("click", function () {
        if (conditional) conditional.abort();
        conditional = null;
        signIn(button, null).catch(failed);
      });
    });
    const add = document.getElementById("passkey-register");
    if (add) add.addEventListener("click", function () { register(add).catch(failed); });
    const auto = document.getElementById("passkey-sign-in");
    if (auto && PublicKeyCredential.isConditionalMediationAvailable) {
      // Conditional UI: the browser offers passkeys in the email field's autofill.
      PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
        if (available && !conditional) signIn(auto, "conditional").catch(function () {});
      });
    }
  });
})();
