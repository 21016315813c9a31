"""Checks of a rendered console page that a person with a screen reader, a keyboard or low
vision depends on, run in the browser on the page as it is drawn:

- every form control has a label (a ``<label for>``, a wrapping label, ``aria-label`` or
  ``aria-labelledby``);
- every piece of text has a contrast of at least 4.5:1 with the background it is drawn on
  (3:1 for large text), as WCAG 2 AA asks, in the palette the page is shown in.
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


def problems(page: Page) -> list[str]:
    """What the page, as shown now, fails of the checks above (empty: none)."""
    unlabelled: list[str] = page.evaluate(_UNLABELLED)
    low: list[str] = page.evaluate(_LOW_CONTRAST)
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
