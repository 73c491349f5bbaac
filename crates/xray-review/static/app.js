// Case view: zoom, window/level on the 8-bit film (an SVG linear transfer), and the saliency
// layer's toggle, method and opacity. Nothing else on the site needs script.
"use strict";
(function () {
  const film = document.getElementById("film");
  if (!film) return;
  const byId = (id) => document.getElementById(id);
  const stack = byId("stack");
  const zoom = byId("zoom");
  const windowWidth = byId("window");
  const level = byId("level");
  const funcs = document.querySelectorAll("#wl feFuncR, #wl feFuncG, #wl feFuncB");

  function applyWindow() {
    const w = Math.max(0.05, windowWidth.value / 100);
    const l = level.value / 100;
    // Maps [l - w/2, l + w/2] onto [0, 1]: out = (in - l) / w + 0.5.
    for (const f of funcs) {
      f.setAttribute("slope", String(1 / w));
      f.setAttribute("intercept", String(0.5 - l / w));
    }
  }
  function applyZoom() {
    stack.style.width = zoom.value + "%";
  }
  zoom.addEventListener("input", applyZoom);
  windowWidth.addEventListener("input", applyWindow);
  level.addEventListener("input", applyWindow);
  byId("reset-view").addEventListener("click", () => {
    zoom.value = 100; windowWidth.value = 100; level.value = 50;
    applyZoom(); applyWindow();
  });

  const overlay = byId("overlay");
  if (!overlay) return;
  const toggle = byId("overlay-toggle");
  const method = byId("overlay-method");
  const opacity = byId("overlay-opacity");
  toggle.addEventListener("change", () => overlay.classList.toggle("hidden", !toggle.checked));
  method.addEventListener("change", () => { overlay.src = overlay.dataset.base + method.value; });
  opacity.addEventListener("input", () => { overlay.style.opacity = String(opacity.value / 100); });
})();
