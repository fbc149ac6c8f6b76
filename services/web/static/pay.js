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
      if (reply.status === 401 || reply.status === 403) window.location.assign("/sign-in");
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
