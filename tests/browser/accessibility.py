"""Checks of a rendered console page that a person with a screen reader, a keyboard or low
vision depends on, run in the browser on the page as it is drawn:

- every form control has a label (a ``<label for>``, a wrapping label, ``aria-label`` or
  ``aria-labelledby``);
- every piece of text has a contrast of at least 4.5:1 with the background it is drawn on
  (3:1 for large text), as WCAG 2 AA asks, in the palette the page is shown in; in the SVG
  graphs, a label's fill against its box's fill (the page's background where the box has
  none), each faded by the opacity it is drawn with.
"""

from __future__ import annotations

from playwright.sync_api import Page

_UNLABELLED = """
() => [...document.querySelectorAll('input, select, textarea')]
  .filter(e => e.type !== 'hidden' && !e.closest('dialog:not([open])'))
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
  .map(e => e.outerHTML.slice(0, 120))
"""

_LOW_CONTRAST = """
() => {
  function rgba(text) {
    const m = text.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return [0, 0, 0, 0];
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }
  function lum([r, g, b]) {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  }
  function background(el) {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0.5) return c;
    }
    return rgba(getComputedStyle(document.body).backgroundColor);
  }
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const el = node.parentElement;
    if (!el || seen.has(el) || !node.textContent.trim()) continue;
    seen.add(el);
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (style.visibility === 'hidden' || style.display === 'none' || box.width === 0 || box.height === 0) continue;
    if (el.closest('.visually-hidden, dialog:not([open]), svg')) continue;
    const fg = rgba(style.color), bg = background(el);
    const hi = Math.max(lum(fg), lum(bg)), lo = Math.min(lum(fg), lum(bg));
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const needed = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    if (ratio < needed) bad.push(`${ratio.toFixed(2)} < ${needed}: "${node.textContent.trim().slice(0, 40)}" (${el.tagName.toLowerCase()}.${el.className})`);
  }
  return bad;
}
"""


_LOW_CONTRAST_SVG = """
() => {
  function rgba(text) {
    const m = (text || '').match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }
  function lum([r, g, b]) {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  }
  function over([r, g, b, a], [R, G, B]) {
    return [r * a + R * (1 - a), g * a + G * (1 - a), b * a + B * (1 - a)];
  }
  function opacity(el, stop) {
    let o = 1;
    for (let e = el; e && e !== stop.parentElement; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity);
    return o;
  }
  function pageBackground(el) {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0.5) return c;
    }
    return rgba(getComputedStyle(document.body).backgroundColor);
  }
  const bad = [];
  for (const text of document.querySelectorAll('svg text')) {
    if (!text.textContent.trim() || text.getBoundingClientRect().width === 0) continue;
    if (text.closest('dialog:not([open])')) continue;
    const svg = text.closest('svg');
    const canvas = pageBackground(svg);
    // What is painted under the text's middle: the rects drawn before it, in their order.
    const box = text.getBoundingClientRect();
    const x = box.left + box.width / 2, y = box.top + box.height / 2;
    let bg = canvas;
    for (const rect of svg.querySelectorAll('rect')) {
      if (!(rect.compareDocumentPosition(text) & Node.DOCUMENT_POSITION_FOLLOWING)) break;
      const r = rect.getBoundingClientRect();
      if (x < r.left || x > r.right || y < r.top || y > r.bottom) continue;
      const fill = rgba(getComputedStyle(rect).fill);
      const alpha = fill ? fill[3] * parseFloat(getComputedStyle(rect).fillOpacity) * opacity(rect, svg) : 0;
      if (alpha > 0) bg = over([fill[0], fill[1], fill[2], alpha], bg);
    }
    const style = getComputedStyle(text);
    const fill = rgba(style.fill);
    if (!fill) continue;
    const fg = over([fill[0], fill[1], fill[2], fill[3] * parseFloat(style.fillOpacity) * opacity(text, svg)], bg);
    const hi = Math.max(lum(fg), lum(bg)), lo = Math.min(lum(fg), lum(bg));
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const needed = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    if (ratio < needed) bad.push(`${ratio.toFixed(2)} < ${needed}: svg "${text.textContent.trim().slice(0, 40)}" (${text.getAttribute('class')} in ${text.parentElement.getAttribute('class')})`);
  }
  return bad;
}
"""


def problems(page: Page) -> list[str]:
    """What the page, as shown now, fails of the checks above (empty: none)."""
    unlabelled: list[str] = page.evaluate(_UNLABELLED)
    low: list[str] = page.evaluate(_LOW_CONTRAST) + page.evaluate(_LOW_CONTRAST_SVG)
    return [f"no label: {u}" for u in unlabelled] + [f"contrast {c}" for c in low]


def check_both_palettes(page: Page) -> list[str]:
    """``problems`` in the light palette, then in the dark one (the page is reloaded)."""
    found = [f"light: {p}" for p in problems(page)]
    page.evaluate("localStorage.setItem('daggerflow-theme', 'dark')")
    page.reload()
    page.wait_for_function("document.documentElement.dataset.theme === 'dark'")
    found += [f"dark: {p}" for p in problems(page)]
    page.evaluate("localStorage.removeItem('daggerflow-theme')")
    return found
