// exactly console: progressive enhancement only; every page works without it.
"use strict";

// The overview reloads its content every data-refresh seconds while the
// box in the footer is ticked (remembered in this browser).
(function () {
  const seconds = Number(document.body.dataset.refresh || 0);
  const box = document.getElementById("auto-refresh");
  if (!seconds || !box) return;
  box.checked = localStorage.getItem("exactly-console-refresh") !== "off";
  box.addEventListener("change", () => localStorage.setItem("exactly-console-refresh", box.checked ? "on" : "off"));
  async function refresh() {
    if (box.checked && document.visibilityState === "visible") {
      try {
        const res = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (res.ok) {
          const doc = new DOMParser().parseFromString(await res.text(), "text/html");
          const main = doc.querySelector("main");
          if (main) document.querySelector("main").replaceWith(main);
        }
      } catch (e) { /* try again next time */ }
    }
    setTimeout(refresh, seconds * 1000);
  }
  setTimeout(refresh, seconds * 1000);
})();

// "Select all" ticks every row of the list.
(function () {
  const all = document.getElementById("select-all");
  if (!all) return;
  all.addEventListener("change", () => {
    for (const box of document.querySelectorAll('form#rows input[name="id"]')) box.checked = all.checked;
  });
})();
