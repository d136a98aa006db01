// Drawing shared by the prediction page (cspn serve) and the labelling page (cspn label): one colour
// per category, each landmark a dot (visible) or a ring (occluded) with its name beside it.
"use strict";
const cspnPalette = ["#e62828", "#1e78e6", "#28b428", "#c828c8", "#dcc81e"];

function cspnColour(categoryId) {
  return cspnPalette[(categoryId - 1) % cspnPalette.length];
}

// g: {category_id, bbox [x, y, w, h], landmarks {name: {x, y, visible}}} in image pixels, drawn on
// a context whose transform maps image pixels to the screen; `unit` image pixels make one screen
// pixel of line width and text.
function cspnDrawGarment(ctx, g, caption, unit) {
  const colour = cspnColour(g.category_id);
  const [x, y, w, h] = g.bbox;
  ctx.lineWidth = 2 * unit;
  ctx.font = `${Math.round(12 * unit)}px sans-serif`;
  ctx.strokeStyle = ctx.fillStyle = colour;
  ctx.strokeRect(x, y, w, h);
  ctx.fillText(caption, x + 3 * unit, Math.max(y - 4 * unit, 12 * unit));
  for (const [name, p] of Object.entries(g.landmarks)) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, 4 * unit, 0, 2 * Math.PI);
    if (p.visible) ctx.fill(); else ctx.stroke();
    ctx.fillText(name, p.x + 6 * unit, p.y + 4 * unit);
  }
}
