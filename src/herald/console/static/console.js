// Herald console: the one script. A form marked data-live-preview re-renders its preview as
// one types (the same POST as its Preview button, asking only for the preview's part); an
// element marked data-refresh replaces its content with what its URL answers, every
// data-every seconds (the overview's figures).
"use strict";
document.querySelectorAll("[data-refresh]").forEach((element) => {
  const every = Number(element.dataset.every || "5") * 1000;
  setInterval(async () => {
    const response = await fetch(element.dataset.refresh, { credentials: "same-origin" });
    if (response.ok) element.innerHTML = await response.text();
  }, every);
});
document.querySelectorAll("form[data-live-preview]").forEach((form) => {
  const target = document.querySelector(form.dataset.livePreview);
  let timer = null;
  let asked = 0;
  const refresh = async () => {
    const body = new URLSearchParams(new FormData(form));
    body.set("action", "preview");
    body.set("fragment", "yes");
    const mine = ++asked;
    // getAttribute: form.action would be its buttons named "action".
    const url = form.getAttribute("action");
    const response = await fetch(url, { method: "POST", body, credentials: "same-origin" });
    if (mine !== asked) return;  // only the latest answer
    target.innerHTML = await response.text();
    // The fields' messages were the last submit's; the preview now lists what is wrong.
    form.querySelectorAll("p.error").forEach((p) => p.remove());
    form.querySelectorAll("[aria-invalid]").forEach((f) => f.removeAttribute("aria-invalid"));
  };
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  });
});
