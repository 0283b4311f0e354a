// bert_nb's website (docs/build_site.py): copy buttons on code blocks, and search snippets without raw TeX.
// Loaded with `defer`: the page is parsed (and on the search page searchtools.js has run) when this runs.
(() => {
  "use strict";

  // --- Copy buttons -----------------------------------------------------------------------------------------
  const PROMPT = /^(>>> |\.\.\. |\$ )/;

  // The code to copy from a <pre>: as is, or when it has prompts (`>>> `, `$ `) only the prompted lines, unprompted
  // (the other lines are output).
  function codeOf(pre) {
    const lines = pre.textContent.replace(/\n$/, "").split("\n");
    if (!lines.some((l) => PROMPT.test(l))) return lines.join("\n");
    return lines.filter((l) => PROMPT.test(l)).map((l) => l.replace(PROMPT, "")).join("\n");
  }

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    const area = Object.assign(document.createElement("textarea"), { value: text });
    area.style.cssText = "position: fixed; opacity: 0";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    if (!ok) throw new Error("copy refused");
  }

  // A "Copy" button on every code block of the article: code cells and code in the text, not outputs or signatures.
  function addCopyButtons(root = document) {
    for (const box of root.querySelectorAll(".bd-article div.highlight")) {
      const pre = box.querySelector(":scope > pre");
      if (!pre || box.closest(".cell_output, .nbdev-signature") || box.querySelector(":scope > .copy-code")) continue;
      const button = Object.assign(document.createElement("button"), {
        type: "button", className: "copy-code", textContent: "Copy", title: "Copy the code",
      });
      button.addEventListener("click", async () => {
        try { await copyText(codeOf(pre)); button.textContent = "Copied"; }
        catch (e) { button.textContent = "Press Ctrl+C"; window.getSelection().selectAllChildren(pre); }
        button.classList.add("copied");
        setTimeout(() => { button.textContent = "Copy"; button.classList.remove("copied"); }, 1500);
      });
      box.append(button);
    }
  }

  // --- Search snippets --------------------------------------------------------------------------------------
  const SYMBOLS = {
    alpha: "α", beta: "β", gamma: "γ", delta: "δ", epsilon: "ε", varepsilon: "ε", zeta: "ζ", eta: "η", theta: "θ",
    kappa: "κ", lambda: "λ", mu: "μ", nu: "ν", xi: "ξ", pi: "π", rho: "ρ", sigma: "σ", tau: "τ", phi: "φ", chi: "χ",
    psi: "ψ", omega: "ω", Delta: "Δ", Sigma: "Σ", cdot: "·", times: "×", le: "≤", leq: "≤", ge: "≥", geq: "≥",
    ne: "≠", approx: "≈", infty: "∞", sum: "∑", to: "→", in: "∈", odot: "⊙", ell: "ℓ", sqrt: "√", quad: " ", qquad: " ",
  };

  // TeX as plain text for a snippet: `\(\sqrt{\hat v} + \epsilon\)` -> `√hat v + ε` (no delimiters, no backslashes).
  function texToText(tex) {
    return tex
      .replace(/\\[()[\]]|^\s*\$+|\$+\s*$/g, " ")
      .replace(/\\(?:left|right|mathrm|text|mathbf|operatorname|begin\{\w+\*?\}|end\{\w+\*?\})/g, "")
      .replace(/\\\\|&|\\[,;:! ]/g, " ")
      .replace(/\\([A-Za-z]+)/g, (m, name) => SYMBOLS[name] ?? name)
      .replace(/[{}]/g, "")
      .replace(/\s+/g, " ")
      .trim();
  }

  // Sphinx's search builds a result's snippet from the page's HTML, where math is still TeX (MathJax typesets it
  // only on the page itself): turn the math into plain text first.
  // (searchtools.js declares `const Search`: a global binding, not a property of `window`)
  if (typeof Search !== "undefined" && typeof Search.htmlToText === "function") {
    const htmlToText = Search.htmlToText;
    Search.htmlToText = (htmlString, anchor) => {
      const doc = new DOMParser().parseFromString(htmlString, "text/html");
      doc.querySelectorAll(".math").forEach((el) => { el.textContent = ` ${texToText(el.textContent)} `; });
      return htmlToText(doc.documentElement.outerHTML, anchor);
    };
  }

  addCopyButtons();
  window.bertNbSite = { addCopyButtons, codeOf, texToText };
})();
