// Herald console: the one script. A form marked data-live-preview re-renders its preview as
// one types (the same POST as its Preview button, asking only for the preview's part); an
// element marked data-refresh replaces its content with what its URL answers, every
// data-every seconds (the overview's figures). An answer that is not the part asked for (the
// session ended: a redirect to sign in; a refusal) is not pasted in: a note says so instead.
"use strict";

const fragment = async (url, options) => {
  const response = await fetch(url, { ...options, credentials: "same-origin", redirect: "manual" });
  const html = (response.headers.get("content-type") || "").startsWith("text/html");
  return (response.status === 200 || response.status === 422) && html ? response.text() : null;
};
const SIGNED_OUT = '<p class="error" role="alert">Not updated: sign in again (reload the page).</p>';

document.querySelectorAll("[data-refresh]").forEach((element) => {
  const every = Number(element.dataset.every || "5") * 1000;
  const timer = setInterval(async () => {
    const html = await fragment(element.dataset.refresh, {});
    if (html === null) {
      clearInterval(timer);
      element.insertAdjacentHTML("afterbegin", SIGNED_OUT);
    } else {
      element.innerHTML = html;
    }
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
    const html = await fragment(form.getAttribute("action"), { method: "POST", body });
    if (mine !== asked) return;  // only the latest answer
    target.innerHTML = html === null ? SIGNED_OUT : html;
    // The fields' messages were the last submit's; the preview now lists what is wrong.
    form.querySelectorAll("p.error").forEach((p) => p.remove());
    form.querySelectorAll("[aria-invalid]").forEach((f) => f.removeAttribute("aria-invalid"));
  };
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  });
});
