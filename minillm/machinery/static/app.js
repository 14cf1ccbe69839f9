// minillm's page: asks /api/generate, draws the answer's token probabilities and its cross-attention heatmap,
// and draws the training log (/api/metrics) as SVG line charts. Plain JavaScript, no libraries, no build step.
// Everything the server sends is put into the page with textContent / SVG attributes, never as HTML.
"use strict";

// ---------------------------------------------------------------------------------------------------------------
// Labels: Turkish first; the "English" button switches. Tooltips explain each decoding setting.
// ---------------------------------------------------------------------------------------------------------------
const I18N = {
  tr: {
    subtitle: "Türk hukuku üzerine soru–cevap: elle yazılmış bir transformer",
    toggle: "English",
    ask_title: "Soru sor",
    question_placeholder: "Örneğin: Anayasa'ya göre temel hak ve özgürlükler nasıl sınırlanabilir?",
    settings: "Kod çözme ayarları",
    strategy: "Strateji", greedy: "Açgözlü (greedy)", sample: "Örnekleme (sample)", beam: "Işın araması (beam)",
    temperature: "Sıcaklık", num_beams: "Işın sayısı", length_penalty: "Uzunluk cezası",
    max_new_tokens: "En çok yeni token", seed: "Tohum", seed_placeholder: "rastgele",
    ask_button: "Sor",
    answer_title: "Cevap", answer_empty: "Henüz soru sorulmadı.",
    tokens_title: "Token olasılıkları",
    tokens_hint: "Her kutu bir cevap token'ı; çubuk, modelin o token'a verdiği olasılık (üzerine gelince sayı görünür).",
    attention_title: "Model nereye baktı?",
    attention_hint: "Çapraz dikkat (cross-attention): her satır bir cevap token'ı, her sütun bir soru token'ı; koyu " +
      "hücre, o cevap token'ı üretilirken sorunun o kısmına çok bakıldığını gösterir.",
    layer: "Katman", head: "Kafa", mean_heads: "kafaların ortalaması", mean_layers: "katmanların ortalaması",
    axis_question: "soru token'ları →", axis_answer: "cevap token'ları ↓",
    training_title: "Eğitim", model_title: "Model",
    working: "Cevap üretiliyor…", failed: "Hata",
    done_status: (n, s, tps) => `${n} token, ${s} s (${tps} token/s)`,
    used: "Kullanılan ayarlar",
    params: (n) => `${n} parametre`,
    no_log: (p) => `Eğitim kaydı yok (${p}); eğitim başlayınca eğriler burada çizilir.`,
    log_status: (n, p, t) => `${n} kayıt, ${p} — her 5 saniyede yenilenir (son: ${t}).`,
    no_attention: "Bu cevap için dikkat ağırlıkları yok.",
    run_info: (dev, prec, ntr, nval, world) =>
      `Eğitim: ${dev} (${world} süreç), ${prec}; ${ntr} eğitim, ${nval} doğrulama çifti.`,
    chart_loss: "Kayıp (loss)", chart_ppl: "Doğrulama perpleksitesi", chart_text: "BLEU / chrF (doğrulama)",
    chart_lr: "Öğrenme oranı", step: "adım", train: "eğitim", val: "doğrulama", no_data: "henüz veri yok",
    tip_strategy: "Açgözlü: her adımda en olası token. Örnekleme: olasılığa göre rastgele. Işın: en iyi k diziyi birlikte izler.",
    tip_temperature: "Logitler bu sayıya bölünür: <1 daha kararlı, >1 daha çeşitli (yalnızca örneklemede).",
    tip_top_k: "Yalnızca en olası k token arasından seç (0 = kapalı).",
    tip_top_p: "Olasılıkları toplamı p'ye ulaşan en küçük token kümesinden seç (1 = kapalı).",
    tip_num_beams: "Işın aramasında aynı anda izlenen dizi sayısı.",
    tip_length_penalty: "Işın puanı / uzunluk^α: büyük α uzun cevapları kayırır.",
    tip_max_new_tokens: "Cevabın en çok kaç token olacağı (sunucunun üst sınırı var).",
    tip_seed: "Aynı tohum, aynı örneklenmiş cevabı verir; boş = her seferinde farklı.",
  },
  en: {
    subtitle: "Question answering on Turkish law: a transformer written by hand",
    toggle: "Türkçe",
    ask_title: "Ask a question",
    question_placeholder: "For example: How may fundamental rights and freedoms be restricted under the Constitution?",
    settings: "Decoding settings",
    strategy: "Strategy", greedy: "Greedy", sample: "Sampling", beam: "Beam search",
    temperature: "Temperature", num_beams: "Beams", length_penalty: "Length penalty",
    max_new_tokens: "Max new tokens", seed: "Seed", seed_placeholder: "random",
    ask_button: "Ask",
    answer_title: "Answer", answer_empty: "No question asked yet.",
    tokens_title: "Token probabilities",
    tokens_hint: "Each box is one answer token; the bar is the probability the model gave it (hover for the number).",
    attention_title: "Where did it look?",
    attention_hint: "Cross-attention: each row is an answer token, each column a question token; a dark cell means " +
      "the model looked hard at that part of the question while producing that answer token.",
    layer: "Layer", head: "Head", mean_heads: "mean over heads", mean_layers: "mean over layers",
    axis_question: "question tokens →", axis_answer: "answer tokens ↓",
    training_title: "Training", model_title: "Model",
    working: "Generating…", failed: "Error",
    done_status: (n, s, tps) => `${n} tokens, ${s} s (${tps} tokens/s)`,
    used: "Settings used",
    params: (n) => `${n} parameters`,
    no_log: (p) => `No training log (${p}); the curves appear here once training writes it.`,
    log_status: (n, p, t) => `${n} records, ${p} — refreshed every 5 seconds (last: ${t}).`,
    no_attention: "No attention weights for this answer.",
    run_info: (dev, prec, ntr, nval, world) =>
      `Training: ${dev} (${world} process(es)), ${prec}; ${ntr} training and ${nval} validation pairs.`,
    chart_loss: "Loss", chart_ppl: "Validation perplexity", chart_text: "BLEU / chrF (validation)",
    chart_lr: "Learning rate", step: "step", train: "train", val: "validation", no_data: "no data yet",
    tip_strategy: "Greedy: the most likely token each step. Sampling: random by probability. Beam: follows the k best sequences.",
    tip_temperature: "Logits are divided by this: <1 more confident, >1 more varied (sampling only).",
    tip_top_k: "Sample only among the k most likely tokens (0 = off).",
    tip_top_p: "Sample from the smallest set of tokens whose probabilities reach p (1 = off).",
    tip_num_beams: "How many sequences beam search follows at once.",
    tip_length_penalty: "Beam score / length^α: larger α favours longer answers.",
    tip_max_new_tokens: "The most tokens the answer may have (the server has its own cap).",
    tip_seed: "The same seed gives the same sampled answer; empty = different every time.",
  },
};

// The decoding controls: input id -> how to read it. Each one becomes a field of the /api/generate request.
const SETTING_INPUTS = {
  strategy: "string", temperature: "number", top_k: "int", top_p: "number", num_beams: "int",
  length_penalty: "number", max_new_tokens: "int", seed: "int-or-null",
};

const state = { lang: "tr", info: null, answer: null, metrics: null, metricsVersion: undefined };

const $ = (id) => document.getElementById(id);
const t = (key, ...args) => {
  const v = I18N[state.lang][key];
  return typeof v === "function" ? v(...args) : v;
};

function svgEl(tag, attrs, parent) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function svgText(parent, x, y, text, attrs) {
  const el = svgEl("text", Object.assign({ x, y }, attrs || {}), parent);
  el.textContent = text;
  return el;
}

function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}

// A number in at most 3-4 significant digits; tiny or huge ones (learning rates) in exponent form.
function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

function applyLanguage() {
  document.documentElement.lang = state.lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => {
    if (el.id === "answer" && el.dataset.state !== "empty") return;  // keep a real answer
    el.textContent = t(el.dataset.i18n);
  });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  });
  document.querySelectorAll("[data-tip]").forEach((el) => { el.title = t(el.dataset.tip); });
  $("lang-toggle").textContent = t("toggle");
  if (state.info) renderInfo(state.info);
  if (state.answer) {
    renderAnswer(state.answer);
    for (const opt of document.querySelectorAll("#layer-select option[value=mean]")) opt.text = t("mean_layers");
    for (const opt of document.querySelectorAll("#head-select option[value=mean]")) opt.text = t("mean_heads");
    drawHeatmap();
  }
  if (state.metrics) renderMetrics(state.metrics);
}

// ---------------------------------------------------------------------------------------------------------------
// Asking: controls -> request -> answer, token probabilities, heatmap
// ---------------------------------------------------------------------------------------------------------------

// Grey out the controls the chosen strategy ignores (they are still sent; generation ignores them too).
function updateInactiveControls() {
  const strategy = $("strategy").value;
  document.querySelectorAll("#settings label[data-for]").forEach((label) => {
    label.classList.toggle("inactive", label.dataset.for !== strategy);
  });
}

function readSettings() {
  const settings = {};
  for (const [id, kind] of Object.entries(SETTING_INPUTS)) {
    const raw = $(id).value.trim();
    if (kind === "string") settings[id] = raw;
    else if (kind === "int-or-null") settings[id] = raw === "" ? null : Number(raw);
    else if (raw !== "") settings[id] = Number(raw);  // an empty box keeps the server's default
  }
  return settings;
}

async function ask(event) {
  if (event) event.preventDefault();
  const question = $("question").value;
  const answer = $("answer");
  const status = $("status");
  $("ask-button").disabled = true;
  status.className = "";
  status.textContent = t("working");
  answer.dataset.state = "loading";
  try {
    const response = await fetch("/api/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ question }, readSettings())),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    state.answer = body;
    renderAnswer(body);
    buildHeatmapSelectors(body);
    drawHeatmap();
  } catch (err) {
    answer.dataset.state = "error";
    answer.className = "error";
    answer.textContent = `${t("failed")}: ${err.message}`;
    status.className = "error";
    status.textContent = err.message;
  } finally {
    $("ask-button").disabled = false;
  }
}

function renderAnswer(body) {
  const answer = $("answer");
  answer.className = "";
  answer.dataset.state = "done";
  answer.textContent = body.answer;
  $("status").className = "";
  $("status").textContent = t("done_status", body.ids.length, fmt(body.elapsed_s), fmt(body.tokens_per_s));

  // One chip per generated token: its string, its probability as a number and as a bar.
  const tokens = $("tokens");
  clear(tokens);
  const strings = body.tgt_tokens || body.ids.map(String);
  strings.forEach((tok, i) => {
    const p = body.token_probs ? body.token_probs[i] : null;
    const chip = document.createElement("span");
    chip.className = "tok" + (p !== null && p !== undefined && p < 0.1 ? " low" : "");
    chip.title = `#${i}  id ${body.ids[i]}  p = ${p === null || p === undefined ? "–" : p.toFixed(4)}`;
    const text = document.createElement("span");
    text.textContent = tok.replace(/ /g, "·");  // a leading space is part of the token: make it visible
    const prob = document.createElement("span");
    prob.className = "p";
    // Two decimals, or one significant digit below 0.01 (an untrained model's 0.002 is not "0.00").
    prob.textContent = p === null || p === undefined ? "" : p >= 0.01 ? p.toFixed(2) : p.toExponential(0);
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.round(100 * (p || 0))}%`;
    bar.appendChild(fill);
    chip.append(text, prob, bar);
    tokens.appendChild(chip);
  });

  // The settings the server actually used (after its defaults and caps), so a learner sees what reached generate.
  const used = $("used-settings");
  used.dataset.settings = JSON.stringify(body.settings);
  const shown = Object.entries(body.settings).map(([k, v]) => `${k}=${v}`).join(", ");
  used.textContent = `${t("used")}: ${shown}`;
}

// ---------------------------------------------------------------------------------------------------------------
// The cross-attention heatmap: cross_attention is (L, H, T, S); rows are answer tokens, columns question tokens.
// ---------------------------------------------------------------------------------------------------------------

function buildHeatmapSelectors(body) {
  const layerSel = $("layer-select");
  const headSel = $("head-select");
  clear(layerSel);
  clear(headSel);
  const att = body.cross_attention;
  if (!att || att.length === 0) return;
  const L = att.length;
  const H = att[0].length;
  for (let l = 0; l < L; l++) layerSel.add(new Option(String(l + 1), String(l)));
  layerSel.add(new Option(t("mean_layers"), "mean"));
  layerSel.value = String(L - 1);  // the last layer: the one closest to the output
  headSel.add(new Option(t("mean_heads"), "mean"));
  for (let h = 0; h < H; h++) headSel.add(new Option(String(h + 1), String(h)));
  headSel.value = "mean";
}

// The (T, S) matrix for the chosen layer and head, averaging where "mean" is chosen.
function attentionMatrix(att, layerChoice, headChoice) {
  const layers = layerChoice === "mean" ? att.map((_, i) => i) : [Number(layerChoice)];
  const heads = headChoice === "mean" ? att[0].map((_, i) => i) : [Number(headChoice)];
  const T = att[0][0].length;
  const S = T > 0 ? att[0][0][0].length : 0;
  const m = Array.from({ length: T }, () => new Array(S).fill(0));
  const n = layers.length * heads.length;
  for (const l of layers) for (const h of heads) {
    for (let i = 0; i < T; i++) for (let j = 0; j < S; j++) m[i][j] += att[l][h][i][j] / n;
  }
  return m;
}

// White -> dark blue, through a light blue: readable for small weights, and prints well.
function heatColor(x) {
  const stops = [[255, 255, 255], [158, 202, 225], [33, 113, 181], [8, 48, 107]];
  const pos = Math.min(Math.max(x, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(pos), stops.length - 2);
  const f = pos - i;
  const c = stops[i].map((a, k) => Math.round(a + f * (stops[i + 1][k] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// Token strings as axis labels: a space becomes "·" (so " b" and "b" differ visibly), long ones are cut.
const shortTok = (s) => {
  const shown = s.replace(/ /g, "·");
  return shown.length > 14 ? shown.slice(0, 13) + "…" : shown;
};

// subtle: colours follow sqrt(weight) on a fixed 0..1 scale. Scaling to the largest weight shown would paint
// uniform attention (every weight 1/S, "looked everywhere") as solid dark, the same as a sharp peak; the square
// root keeps small weights visible without that lie.
const heatShade = (w) => heatColor(Math.sqrt(Math.min(Math.max(w, 0), 1)));

function drawHeatmap() {
  const svg = $("heatmap");
  clear(svg);
  const body = state.answer;
  if (!body || !body.cross_attention || body.cross_attention.length === 0) {
    svg.setAttribute("width", 400);
    svg.setAttribute("height", 30);
    if (body) svgText(svg, 0, 20, t("no_attention"), { class: "legend" });
    return;
  }
  const m = attentionMatrix(body.cross_attention, $("layer-select").value, $("head-select").value);
  const T = m.length;
  const S = T > 0 ? m[0].length : 0;
  const srcTok = (body.src_tokens || []).map(shortTok);
  const tgtTok = (body.tgt_tokens || []).map(shortTok);
  const longest = (arr) => arr.reduce((a, s) => Math.max(a, s.length), 1);

  // Geometry: labels left (answer tokens) and on top (question tokens, turned 60 degrees).
  const charW = 6.8;
  const left = Math.max(16 + charW * longest(tgtTok), 112);  // room for the axis title too
  const top = 26 + 0.87 * charW * longest(srcTok);
  const avail = Math.max(($("heatmap-wrap").clientWidth || 900) - left - 90, 200);
  // Cell width fits the question into the panel; cell height keeps a long answer within ~640 px where it can.
  // Both stay between 9 and 28 px, so cells are square unless one side is long.
  const fit = (space, n) => Math.max(9, Math.min(28, Math.floor(space / Math.max(n, 1))));
  const cw = fit(avail, S);
  const ch = fit(640, T);
  const width = left + S * cw + 90;
  const height = top + T * ch + 10;
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);

  svgText(svg, left, 12, t("axis_question"), { class: "legend" });
  svgText(svg, 2, top - 6, t("axis_answer"), { class: "legend" });
  // Thin the labels to every other one when cells are too small to hold them all.
  for (let j = 0; j < S; j += cw >= 11 ? 1 : 2) {
    const x = left + j * cw + cw / 2 + 3;
    const label = svgText(svg, x, top - 4, srcTok[j] ?? String(j), { transform: `rotate(-60 ${x} ${top - 4})` });
    label.classList.add("src-label");
  }
  for (let i = 0; i < T; i += ch >= 11 ? 1 : 2) {
    const label = svgText(svg, left - 4, top + i * ch + ch / 2 + 4, tgtTok[i] ?? String(i),
      { "text-anchor": "end" });
    label.classList.add("tgt-label");
  }
  const grid = svgEl("g", { class: "cells" }, svg);
  for (let i = 0; i < T; i++) {
    for (let j = 0; j < S; j++) {
      const rect = svgEl("rect", {
        class: "cell", x: left + j * cw, y: top + i * ch, width: cw - 1, height: ch - 1,
        fill: heatShade(m[i][j]),
      }, grid);
      const tip = svgEl("title", {}, rect);  // the hover text: answer token ← question token: weight
      tip.textContent = `${body.tgt_tokens?.[i] ?? i} ← ${body.src_tokens?.[j] ?? j}: ${m[i][j].toFixed(3)}`;
    }
  }

  // Colour scale: weight 0 at the bottom, 1 at the top, ticks placed on the same square-root axis.
  const lx = left + S * cw + 20;
  const defs = svgEl("defs", {}, svg);
  const grad = svgEl("linearGradient", { id: "heat-grad", x1: 0, y1: 1, x2: 0, y2: 0 }, defs);
  for (let k = 0; k <= 4; k++) {
    svgEl("stop", { offset: k / 4, "stop-color": heatColor(k / 4) }, grad);
  }
  const lh = Math.max(Math.min(T * ch, 160), 80);
  svgEl("rect", { x: lx, y: top, width: 12, height: lh, fill: "url(#heat-grad)", stroke: "#9aa3b2" }, svg);
  for (const w of [0, 0.05, 0.25, 0.5, 1]) {
    svgText(svg, lx + 16, top + lh - Math.sqrt(w) * lh + 4, String(w), { class: "legend" });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Line charts for the training log, drawn as inline SVG
// ---------------------------------------------------------------------------------------------------------------

// Tick values at a "nice" step (1, 2 or 5 times a power of ten) inside [lo, hi]: the widest such step that still
// gives at least n ticks.
function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; lo = lo - 1; }
  const mag = Math.pow(10, Math.ceil(Math.log10(hi - lo)));
  for (const step of [5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01].map((k) => k * mag)) {
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
    if (ticks.length >= n) return ticks;
  }
  return [lo, hi];
}

// A long series is thinned to at most maxPoints (every k-th point, always keeping the last one).
function thin(points, maxPoints) {
  if (points.length <= maxPoints) return points;
  const k = Math.ceil(points.length / maxPoints);
  const out = points.filter((_, i) => i % k === 0);
  if (out[out.length - 1] !== points[points.length - 1]) out.push(points[points.length - 1]);
  return out;
}

const COLORS = ["#1f5fbf", "#e8590c", "#2b8a3e", "#862e9c"];

// One format for every tick of an axis: learning rates (all below 0.01) all in exponent form, not "0.001"
// next to "9.0e-4".
function tickFormat(ticks) {
  const big = Math.max(...ticks.map(Math.abs));
  if (big !== 0 && (big < 1e-2 || big >= 1e5)) return (v) => (v === 0 ? "0" : v.toExponential(1));
  return fmt;
}

function drawLineChart(svg, title, series) {
  clear(svg);
  const W = svg.clientWidth || 400;
  const H = svg.clientHeight || 230;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const m = { l: 54, r: 12, t: 44, b: 30 };  // the title and the legend sit in the top margin
  svgText(svg, m.l, 16, title, { class: "title" });
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) {
    svgText(svg, W / 2, H / 2, t("no_data"), { "text-anchor": "middle" });
    return;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  const pad = (y1 - y0) * 0.05 || Math.abs(y0) * 0.1 || 1;
  y0 -= pad; y1 += pad;
  const xs = niceTicks(x0, x1, 4);
  const ys = niceTicks(y0, y1, 3);
  const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Y = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);

  const yFmt = tickFormat(ys);
  for (const v of ys) {
    svgEl("line", { class: "grid", x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) }, svg);
    svgText(svg, m.l - 5, Y(v) + 4, yFmt(v), { "text-anchor": "end" });
  }
  for (const v of xs) svgText(svg, X(v), H - m.b + 14, fmt(v), { "text-anchor": "middle" });
  svgEl("line", { class: "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }, svg);
  svgEl("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }, svg);
  svgText(svg, W - m.r, H - 4, t("step"), { "text-anchor": "end" });

  let legendX = m.l;  // legend: a colour square and a name per series, on the line under the title
  for (const s of series) {
    svgEl("rect", { x: legendX, y: 24, width: 10, height: 10, fill: s.color }, svg);
    svgText(svg, legendX + 14, 33, s.label, { fill: s.color });
    legendX += 14 + 7 * s.label.length + 14;
  }
  for (const s of series) {
    if (s.points.length === 0) continue;
    const pts = thin(s.points, 600);
    svgEl("polyline", { stroke: s.color, points: pts.map((p) => `${X(p[0])},${Y(p[1])}`).join(" ") }, svg);
    if (pts.length <= 60) {  // few points (evaluations): mark each, with its value on hover
      for (const p of pts) {
        const dot = svgEl("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3, fill: s.color }, svg);
        svgEl("title", {}, dot).textContent = `${t("step")} ${p[0]}: ${fmt(p[1])}`;
      }
    }
  }
}

// (step, value) points of the records of one kind that carry one of the given keys (the first key found wins).
function seriesOf(records, kind, keys) {
  const points = [];
  for (const r of records) {
    if (r.kind !== kind) continue;
    const key = keys.find((k) => typeof r[k] === "number" && Number.isFinite(r[k]));
    if (key !== undefined) points.push([r.step, r[key]]);
  }
  return points;
}

function renderMetrics(data) {
  const recs = data.records;
  const status = $("metrics-status");
  if (recs.length === 0) {
    status.textContent = t("no_log", data.log_path || "–");
  } else {
    status.textContent = t("log_status", recs.length, data.log_path, new Date().toLocaleTimeString(state.lang === "tr" ? "tr-TR" : "en-GB"));
  }
  // The trainer (minillm/machinery/run.py; the format is machinery/runlog.py) writes "train" records {loss, lr,
  // ...} every --log-every steps and "eval" records {nll, perplexity, accuracy, bleu, chrf, ...}. The validation curve uses nll (mean cross-entropy per token,
  // nats): the training loss may include label smoothing, nll never does, so they differ by that much.
  const S = (label, kind, keys, color) => ({ label, color, points: seriesOf(recs, kind, keys) });
  drawLineChart($("chart-loss"), t("chart_loss"), [
    S(t("train"), "train", ["loss"], COLORS[0]),
    S(t("val"), "eval", ["nll"], COLORS[1]),
  ]);
  drawLineChart($("chart-ppl"), t("chart_ppl"), [S(t("val"), "eval", ["perplexity"], COLORS[1])]);
  drawLineChart($("chart-text"), t("chart_text"), [
    S("BLEU", "eval", ["bleu"], COLORS[2]),
    S("chrF", "eval", ["chrf"], COLORS[3]),
  ]);
  drawLineChart($("chart-lr"), t("chart_lr"), [S("lr", "train", ["lr"], COLORS[0])]);

  // The run's "info" record (written once at step 0): where and how it trains.
  const info = recs.find((r) => r.kind === "info");
  $("run-info").textContent = info
    ? t("run_info", info.device, info.precision, info.train_pairs, info.val_pairs, info.world_size) : "";
}

async function loadMetrics() {
  if (document.hidden) return;  // no polling from a background tab
  try {
    const response = await fetch("/api/metrics");
    const data = await response.json();
    if (!response.ok) throw new Error(data.error);
    if (data.version === state.metricsVersion && state.metrics) return;  // nothing new since the last poll
    state.metricsVersion = data.version;
    state.metrics = data;
    renderMetrics(data);
  } catch (err) {
    $("metrics-status").textContent = `${t("failed")}: ${err.message}`;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The model panel, and start-up
// ---------------------------------------------------------------------------------------------------------------

function renderInfo(info) {
  $("param-count").textContent = t("params", info.num_params.toLocaleString(state.lang === "tr" ? "tr-TR" : "en-US"));
  const table = $("config-table");
  clear(table);
  const rows = Object.entries(info.model_config).concat([["checkpoint", info.checkpoint]]);
  for (const [key, value] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = key;
    tr.insertCell().textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
  }
}

async function loadInfo() {
  const response = await fetch("/api/info");
  const info = await response.json();
  state.info = info;
  renderInfo(info);
  // The controls' limits are the server's ranges (minillm.decoding.SETTINGS with the server's caps): the
  // page states no bound of its own. An exclusive lower bound (top_p > 0) has no HTML form; the server says so.
  for (const [id, range] of Object.entries(info.ranges)) {
    const input = $(id);
    if (!input) continue;
    if (range.min_inclusive) input.min = range.min;
    if (range.max !== null) input.max = range.max;
  }
  $("question").maxLength = info.limits.max_question_chars;
}

async function start() {
  $("lang-toggle").addEventListener("click", () => {
    state.lang = state.lang === "tr" ? "en" : "tr";
    applyLanguage();
  });
  $("ask-form").addEventListener("submit", ask);
  $("strategy").addEventListener("change", updateInactiveControls);
  $("layer-select").addEventListener("change", drawHeatmap);
  $("head-select").addEventListener("change", drawHeatmap);
  window.addEventListener("resize", () => { drawHeatmap(); if (state.metrics) renderMetrics(state.metrics); });

  // /?q=...&strategy=beam&num_beams=3&lang=en: fill the controls from the URL, then ask at once.
  const params = new URLSearchParams(window.location.search);
  if (params.get("lang") === "en") state.lang = "en";
  for (const id of Object.keys(SETTING_INPUTS)) {
    if (params.has(id)) $(id).value = params.get(id);
  }
  applyLanguage();
  updateInactiveControls();
  try {
    await loadInfo();
  } catch (err) {
    $("param-count").textContent = `${t("failed")}: ${err.message}`;
  }
  loadMetrics();
  setInterval(loadMetrics, 5000);  // while a run goes, its curves grow
  if (params.has("q")) {
    $("question").value = params.get("q");
    await ask();
  }
}

document.addEventListener("DOMContentLoaded", start);
