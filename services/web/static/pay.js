// The payment code page: fetch a fresh one-time code (drawn by the server as a
// barcode and a QR code) and fetch the next one shortly before it expires.
"use strict";
(function () {
  async function renew(box) {
    const reply = await fetch(box.dataset.url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content,
      },
      body: "{}",
    });
    if (!reply.ok) {
      // The session cannot open the wallet now (signed out, needs a step-up):
      // the wallet page says what to do. Anything else is retried shortly.
      const answer = await reply.json().catch(function () { return {}; });
      const leave = ["signed_out", "step_up_needed", "fresh_sign_in_needed"];
      if (reply.status === 403 || leave.indexOf(answer.error) >= 0) {
        window.location.assign("/wallet");
        return;
      }
      window.setTimeout(function () { renew(box); }, 5000);
      return;
    }
    const code = await reply.json();
    document.getElementById("payment-barcode").src = code.barcode;
    document.getElementById("payment-qr").src = code.qr;
    document.getElementById("payment-code").textContent = code.code;
    const expires = document.getElementById("payment-expires");
    const at = new Date(code.expires_at * 1000);
    expires.dateTime = at.toISOString();
    expires.textContent = at.toLocaleTimeString(document.documentElement.lang);
    window.setTimeout(function () { renew(box); }, code.renew_in_ms);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const box = document.getElementById("paycode");
    if (box) renew(box);
  });
})();
