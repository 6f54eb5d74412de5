// Semantic-ID explorer: the code tree level by level (items per prefix), search by id or title,
// and, for one item, the items that share each of its prefixes. Data: <script id="sid-data">.
// Text is always set with textContent, never parsed as HTML.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("sid-data").textContent);
  const n = data.ids.length;
  const tree = document.getElementById("tree");
  const detail = document.getElementById("detail");
  const search = document.getElementById("search");
  const results = document.getElementById("results");
  const LIST_MAX = 25;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }
  function codeText(code) { return "<" + code.join(" ") + ">"; }
  function sharesPrefix(i, prefix) {
    const c = data.codes[i];
    for (let l = 0; l < prefix.length; l++) if (c[l] !== prefix[l]) return false;
    return true;
  }
  function itemsUnder(prefix) {
    const out = [];
    for (let i = 0; i < n; i++) if (sharesPrefix(i, prefix)) out.push(i);
    return out;
  }
  function itemList(indices, highlight) {
    const ul = el("ul");
    indices.slice(0, LIST_MAX).forEach(function (i) {
      const li = el("li", data.ids[i] + " " + codeText(data.codes[i]) + " " + (data.titles[i] || "(no title)"),
                    "match" + (i === highlight ? " hit" : ""));
      li.dataset.item = String(i);
      li.addEventListener("click", function () { showItem(i); });
      ul.appendChild(li);
    });
    if (indices.length > LIST_MAX) ul.appendChild(el("li", "… and " + (indices.length - LIST_MAX) + " more", "note"));
    return ul;
  }

  // The tree: the children of `prefix` with their item counts, most used first.
  function showPrefix(prefix) {
    tree.replaceChildren();
    const crumbs = el("p");
    const root = el("button", "root", "prefix");
    root.addEventListener("click", function () { showPrefix([]); });
    crumbs.appendChild(root);
    prefix.forEach(function (code, level) {
      crumbs.appendChild(document.createTextNode(" › "));
      const b = el("button", "L" + level + ":" + code, "prefix");
      b.addEventListener("click", function () { showPrefix(prefix.slice(0, level + 1)); });
      crumbs.appendChild(b);
    });
    tree.appendChild(crumbs);
    const under = itemsUnder(prefix);
    tree.appendChild(el("p", under.length + " items under " + (prefix.length ? codeText(prefix) : "the root"), "note"));
    if (prefix.length < data.levels) {
      const counts = new Map();
      under.forEach(function (i) {
        const c = data.codes[i][prefix.length];
        counts.set(c, (counts.get(c) || 0) + 1);
      });
      const children = Array.from(counts.entries()).sort(function (a, b) { return b[1] - a[1] || a[0] - b[0]; });
      tree.appendChild(el("h3", "level " + prefix.length + ": " + children.length + " of " +
                          data.codebook_sizes[prefix.length] + " codes used"));
      const box = el("div");
      box.id = "children";
      children.forEach(function (pair) {
        const b = el("button", pair[0] + " (" + pair[1] + ")", "prefix");
        b.dataset.code = String(pair[0]);
        b.dataset.count = String(pair[1]);
        b.addEventListener("click", function () { showPrefix(prefix.concat([pair[0]])); });
        box.appendChild(b);
      });
      tree.appendChild(box);
    }
    if (under.length <= 200) tree.appendChild(itemList(under));
  }

  // One item: its code and, per level, the items that share that prefix.
  function showItem(i) {
    detail.replaceChildren();
    const head = el("h3", data.ids[i] + " — " + (data.titles[i] || "(no title)"));
    head.id = "item-title";
    detail.appendChild(head);
    const code = el("p", "code " + codeText(data.codes[i]), "code");
    code.id = "item-code";
    detail.appendChild(code);
    for (let level = 1; level <= data.levels; level++) {
      const prefix = data.codes[i].slice(0, level);
      const others = itemsUnder(prefix).filter(function (j) { return j !== i; });
      const h = el("h3", "sharing " + codeText(prefix) + ": " + others.length + " other items");
      h.className = "share";
      h.dataset.level = String(level);
      h.dataset.count = String(others.length);
      detail.appendChild(h);
      if (others.length) detail.appendChild(itemList(others));
    }
    showPrefix(data.codes[i].slice(0, data.levels - 1));
  }

  search.addEventListener("input", function () {
    const q = search.value.trim().toLowerCase();
    results.replaceChildren();
    if (!q) return;
    const hits = [];
    for (let i = 0; i < n && hits.length < 200; i++) {
      if (data.ids[i].toLowerCase() === q) hits.unshift(i);
      else if (data.ids[i].toLowerCase().includes(q) || (data.titles[i] || "").toLowerCase().includes(q)) hits.push(i);
    }
    results.appendChild(el("p", hits.length ? hits.length + (hits.length === 200 ? "+" : "") + " matches" : "no match", "note"));
    results.appendChild(itemList(hits));
  });

  showPrefix([]);
})();
