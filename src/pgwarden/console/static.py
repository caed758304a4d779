"""The console's one stylesheet (served at ``/console/static/console.css``; no build step, no JavaScript)."""

CSS = """
:root { --fg:#1c1c1c; --muted:#555; --bg:#fafafa; --card:#fff; --line:#d0d0d0; --accent:#1a5fb4;
        --ok:#1e6b34; --bad:#a51d2d; --warn:#8a5a00; --focus:#ff9e00; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
a { color:var(--accent); }
.skip { position:absolute; left:-999px; top:0; background:#fff; padding:.5rem 1rem; }
.skip:focus { left:1rem; z-index:10; }
:focus-visible { outline:3px solid var(--focus); outline-offset:2px; }
a:focus-visible, button:focus-visible, select:focus-visible, input:focus-visible, textarea:focus-visible
  { outline:3px solid var(--focus); outline-offset:2px; box-shadow:0 0 0 5px #1c1c1c33; }
header { display:flex; flex-wrap:wrap; gap:1rem; align-items:center; justify-content:space-between;
         padding:.75rem 1.5rem; background:#20262e; color:#fff; }
header a { color:#fff; margin-right:1rem; font-weight:600; }
header a[aria-current="page"] { text-decoration:underline; text-underline-offset:.3em; }
header .brand { font-weight:700; margin-right:2rem; }
header form { display:inline; margin-left:.75rem; }
header button { background:transparent; color:#fff; border:1px solid #fff8; }
main { max-width:72rem; margin:0 auto; padding:1.5rem; }
h1 { font-size:1.6rem; margin:.5rem 0 1rem; }
h2 { font-size:1.25rem; margin:2rem 0 .75rem; }
h3 { font-size:1.05rem; margin:0 0 .5rem; }
h4 { font-size:.95rem; margin:1rem 0 .25rem; }
.card { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:1rem 1.25rem; margin:0 0 1rem; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:.15rem 1rem; margin:.5rem 0; }
dl.facts dt { color:var(--muted); }
dl.facts dd { margin:0; }
pre.sql { background:#f3f4f6; border:1px solid var(--line); border-radius:4px; padding:.75rem; overflow:auto;
          white-space:pre-wrap; word-break:break-word; font:14px/1.45 ui-monospace, "DejaVu Sans Mono", monospace; }
.sql-keyword { color:#0b4f9c; font-weight:700; }
.sql-string { color:#8a3b00; }
.sql-comment { color:#5f6b5f; font-style:italic; }
.sql-number, .sql-param { color:#6d2aa8; }
.sql-ident { color:#00615a; }
.forms { display:flex; flex-wrap:wrap; gap:1rem; margin-top:1rem; }
.forms form { flex:1 1 20rem; border:1px solid var(--line); border-radius:4px; padding:.75rem; }
label { display:block; font-weight:600; margin:.5rem 0 .2rem; }
input[type=text], input[type=password], select, textarea { width:100%; font:inherit; padding:.4rem .5rem;
          border:1px solid #888; border-radius:4px; background:#fff; }
textarea { min-height:4rem; }
button { font:inherit; font-weight:600; padding:.45rem 1rem; margin-top:.6rem; border-radius:4px; cursor:pointer;
         border:1px solid var(--accent); background:var(--accent); color:#fff; }
button.approve { background:var(--ok); border-color:var(--ok); }
button.deny { background:var(--bad); border-color:var(--bad); }
.hint { color:var(--muted); font-size:.9rem; margin:.2rem 0; }
.flash { border-left:5px solid var(--ok); background:#eaf6ec; padding:.6rem 1rem; }
.problem { border-left:5px solid var(--bad); background:#fbeaea; padding:.6rem 1rem; }
.badge { display:inline-block; padding:0 .45rem; border-radius:3px; font-size:.85rem; font-weight:700;
         border:1px solid currentColor; }
.badge.allow, .badge.approved, .badge.used { color:var(--ok); }
.badge.deny, .badge.denied { color:var(--bad); }
.badge.needs_approval, .badge.pending, .badge.expired, .badge.withdrawn { color:var(--warn); }
table { border-collapse:collapse; width:100%; background:var(--card); }
th, td { text-align:left; border-bottom:1px solid var(--line); padding:.35rem .5rem; vertical-align:top; }
th { background:#eef0f2; }
td code, li code { font-size:.9rem; }
ol.timeline { list-style:none; padding:0; }
.filters { display:flex; flex-wrap:wrap; gap:1rem; align-items:end; }
.filters div { flex:1 1 12rem; }
"""
