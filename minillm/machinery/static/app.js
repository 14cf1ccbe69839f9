// minillm's page: asks /api/generate, shows the passages a retrieving model read (its sources), the question and
// the passages as the model's tokens, the answer's token probabilities and its cross-attention heatmap, and draws
// the training log (/api/metrics) as SVG line charts. Plain JavaScript, no libraries, no build step. Everything
// the server sends is put into the page with textContent / SVG attributes, never as HTML.
//
// One source of truth: every decoding setting, its bounds and its default come from /api/info (the server's
// copy of minillm.decoding.SETTINGS with its own caps). The page only adds labels, in Turkish and English.
"use strict";

// ---------------------------------------------------------------------------------------------------------------
// Labels: Turkish first; the "English" button switches. Tooltips explain each decoding setting.
// ---------------------------------------------------------------------------------------------------------------
const I18N = {
  tr: {
    locale: "tr-TR",
    subtitle: "Türk hukuku soru–cevap; elle yazılmış bir transformer",
    toggle: "English",
    ask_title: "Soru sor",
    question_placeholder: "Örneğin: Anayasa'ya göre temel hak ve özgürlükler nasıl sınırlanabilir?",
    settings: "Kod çözme ayarları",
    // The settings, by their API names: the controls' labels and the "settings used" line.
    strategy: "Strateji", max_new_tokens: "En çok yeni token", temperature: "Sıcaklık", top_k: "top-k",
    top_p: "top-p", num_beams: "Işın sayısı", length_penalty: "Uzunluk cezası", repetition_penalty: "Tekrar cezası",
    no_repeat_ngram_size: "Tekrarsız n-gram", seed: "Tohum", seed_placeholder: "rastgele",
    // Option labels keep the English term in brackets: it is the one a learner finds in papers and code.
    greedy: "Açgözlü (greedy)", sample: "Örnekleme (sample)", beam: "Işın araması (beam)",
    value_greedy: "açgözlü", value_sample: "örnekleme", value_beam: "ışın araması",
    value_null: "yok", value_true: "evet", value_false: "hayır",
    ask_button: "Sor",
    answer_title: "Cevap", answer_empty: "Henüz soru sorulmadı.",
    language_note: "Model Türk hukukuyla ilgili soruları Türkçe cevaplar: yalnızca Türkçe hukuk soru–cevaplarıyla " +
      "eğitildi, başka dilde ya da başka konudaki bir soruya ilgisiz bir cevap verir.",
    foreign_question: "Bu soru Türkçe görünmüyor: model yalnızca Türk hukuku sorularını Türkçe cevaplar; aşağıdaki " +
      "cevap büyük olasılıkla soruyla ilgisiz. Soruyu Türkçe sorun.",
    // Retrieval: the passages read after the question (/api/generate's sources), each a segment of the encoder input.
    sources_title: "Kaynaklar",
    sources_hint: (n) => `Model cevap vermeden önce sorudan sonra bu ${n} pasajı okudu, bu sırayla; kodlayıcı ` +
      "girdisinde ve ısı haritasında aynı numara ve renkle işaretlidir.",
    sources_none: "Soruyla eşleşen pasaj yok: model yalnızca soruyu okudu.",
    why_reference: "soruda anılan madde",
    why_bm25: (score) => `BM25 skoru ${score}`,
    source_tokens: (n) => `${n} token okundu`,
    show_all: (n) => `tamamını göster (${n} karakter)`, show_less: "kısalt",
    label_article: (n, heading) => `Anayasa md. ${n} — ${heading}`,
    label_pair: (n, heading) => `eğitim çifti ${n} — ${heading}`,
    short_article: (n) => `md. ${n}`, short_pair: (n) => `çift ${n}`, repealed: "mülga",
    seg_question: "soru", seg_passage: (k) => `${k}. pasaj`,
    src_title_rag: "Kodlayıcının okuduğu: soru, sonra pasajlar",
    src_hint_rag: "Soru ve her pasaj bir <eos> ile biter; soldaki renkli çizgi ve etiket her token'ın hangi parçadan " +
      "geldiğini gösterir (numaralar Kaynaklar'daki gibi). Her renk bir token, altındaki sayı sözlükteki " +
      "numarası (id).",
    retrieval_on: (a, p, nl, na) => `Geri getirme (retrieval): her soruya, sorudan sonra okunmak üzere en çok ${a} ` +
      `Anayasa pasajı ve ${p} eğitim cevabı eklenir (soruda anılan madde önce, sonra BM25); ${nl} madde pasajı ve ` +
      `${na} eğitim cevabı arasından.`,
    retrieval_off: "Geri getirme yok: model yalnızca soruyu okur.",
    src_title: "Soru, modelin okuduğu hâliyle",
    src_hint: "Tokenizer (BPE) soruyu bu parçalara böler; her renk bir token, altındaki sayı sözlükteki numarası (id).",
    src_hint_no_ids: "Tokenizer (BPE) soruyu bu parçalara böler; her renk bir token (bu sunucu soru token'larının " +
      "id'lerini göndermiyor).",
    tokens_title: "Cevap token'ları ve olasılıkları",
    tokens_hint: "Her kutu bir cevap token'ı: altında sözlük numarası (id) ve modelin ona verdiği olasılık; renk " +
      "ve çubuk da olasılığı gösterir.",
    prob_low: "düşük olasılık", prob_high: "yüksek",
    marks_legend: "· = boşluk (token bir boşlukla başlıyor); \\xc4 gibi bir parça, çok baytlı bir harfin tek baytıdır.",
    attention_title: "Model nereye baktı?",
    attention_hint: "Çapraz dikkat (cross-attention): her satır bir cevap token'ı, her sütun bir soru token'ı; koyu " +
      "hücre, o cevap token'ı üretilirken sorunun o kısmına çok bakıldığını gösterir.",
    attention_hint_rag: "Çapraz dikkat (cross-attention): her satır bir cevap token'ı, her sütun kodlayıcının " +
      "okuduğu bir token: önce soru, sonra pasajlar (dikey çizgiler onları ayırır, üstteki renkli şerit hangi " +
      "pasaj olduğunu söyler); koyu hücre, o cevap token'ı üretilirken oraya çok bakıldığını gösterir.",
    heatmap_marks: "· = boşluk. Bir hücrenin üzerine gelin (ya da dokunun): cevap token'ı, soru token'ı ve ağırlık " +
      "aşağıda yazılır.",
    layer: "Katman", head: "Kafa", mean_heads: "kafaların ortalaması", mean_layers: "katmanların ortalaması",
    axis_question: "soru token'ları →", axis_answer: "cevap token'ları ↓", weight: "ağırlık",
    axis_source: "kodlayıcının okuduğu token'lar →",
    cell_text: (i, a, j, q, w, where) => `cevap #${i} «${a}» ← ${where ?? "soru"} #${j} «${q}»: ağırlık ${w}`,
    attention_kind: "Dikkat", kind_cross: "çapraz dikkat (soru → cevap)",
    kind_self: "öz-dikkat (cevap → önceki token'ları)",
    self_attention_hint: "Öz-dikkat (self-attention): her satır bir cevap token'ı, her sütun kod çözücünün o adımda " +
      "okuyabildiği önceki bir token (<bos>, sonra daha önce yazılan cevap token'ları); nedensel maske yüzünden " +
      "köşegenin üstü hep boştur: model henüz yazılmamış bir token'a bakamaz.",
    axis_earlier: "önceki token'lar →",
    self_cell_text: (i, a, j, k, w) => `cevap #${i} «${a}» ← önceki #${j} «${k}»: ağırlık ${w}`,
    bos_tip: "<bos>: kod çözme buradan başlar (konum 0)",
    earlier_tip: (j, id) => `kod çözücü girdisi #${j}: cevap token'ı #${j - 1}, id ${id}`,
    steps_title: "Adım adım kod çözme",
    steps_hint: "Bir cevap token'ına tıklayın: o adımdaki en olası adaylar; solda modelin kendi olasılıkları " +
      "(softmax), sağda ayarlar (tekrar cezası, tekrarsız n-gram, sıcaklık, top-k, top-p) uygulandıktan sonra. " +
      "Seçilen token kalın yazılır.",
    step_title: (i, tok) => `Adım #${i}: «${tok}» yazıldı`,
    cand_raw: "Model (ayarlardan önce)", cand_processed: "Ayarlardan sonra",
    cand_tip: (r, id, p) => `${r}. aday, id ${id}, olasılık ${p}`,
    no_steps: "Bu cevap için adım bilgisi yok.",
    training_title: "Eğitim", model_title: "Model",
    working: "Cevap üretiliyor…",
    done_status: (n, s, tps) => `${n} token, ${s} sn (saniyede ${tps} token)`,
    used: "Kullanılan ayarlar",
    token_tip: (i, id, p) => `cevap token'ı #${i}, id ${id}, olasılık ${p}`,
    src_tip: (j, id, where) => `${where ?? "soru"} token'ı #${j}` + (id === undefined ? "" : `, id ${id}`),
    params: (n) => `${n} parametre`,
    no_log: (p) => `Eğitim kaydı yok (${p}); eğitim başlayınca eğriler burada çizilir.`,
    log_status: (n, p, t) => `${n} kayıt, ${p} — her 5 saniyede yenilenir (son: ${t}).`,
    no_attention: "Bu cevap için dikkat ağırlıkları yok.",
    run_info: (dev, prec, ntr, nval, world) =>
      `Eğitim: ${dev} (${world} süreç), ${prec}; ${ntr} eğitim, ${nval} doğrulama çifti.`,
    chart_loss: "Kayıp (loss)", chart_ppl: "Doğrulama perpleksitesi", chart_text: "BLEU / chrF (doğrulama)",
    chart_lr: "Öğrenme oranı", lr: "öğrenme oranı", step: "adım", train: "eğitim", val: "doğrulama",
    no_data: "henüz veri yok",
    // Problems: with a URL setting, a field, or the server's answer. Each names what it is about.
    url_unknown: (name, known) => `Adresteki «${name}» ayarı bilinmiyor; bilinenler: ${known}.`,
    url_bad: (name, label, why) => `Adresteki «${name}» ayarı (${label}) kabul edilmedi: ${why}`,
    url_not_asked: "Soru bu yüzden sorulmadı; ayarı düzeltip «Sor»a basın.",
    field_bad: (label, why) => `${label}: ${why}`,
    must_choice: (raw, choices) => `şunlardan biri olmalı: ${choices} («${raw}» verildi).`,
    must_int: (raw, range) => `${range} olan bir tam sayı olmalı («${raw}» verildi).`,
    must_number: (raw, range) => `${range} olan bir sayı olmalı («${raw}» verildi).`,
    must_lang: (raw) => `«tr» ya da «en» olmalı («${raw}» verildi).`, language: "dil",
    question_empty: "Soru boş: bir soru yazın.",
    question_chars: (n, max) => `Soru ${n} karakter; sunucu en çok ${max} karakter kabul ediyor.`,
    question_tokens: (max) => `Soru çok uzun: model en çok ${max} token okuyabiliyor.`,
    server_field: (label, why) => `Sunucu reddetti: ${label} ${why}`,
    server_status: {
      400: "Sunucu isteği geçersiz buldu", 404: "Sunucuda böyle bir adres yok", 413: "İstek çok büyük",
      500: "Sunucuda bir hata oluştu", 503: "Model meşgul; biraz sonra yeniden deneyin",
    },
    server_other: (status) => `Sunucu isteği reddetti (HTTP ${status})`,
    server_said: (text) => `sunucunun İngilizce iletisi: ${text}`,
    unreachable: "Sunucuya ulaşılamadı; çalışıyor mu?",
    not_json: (status) => `Sunucudan beklenmeyen bir yanıt geldi (HTTP ${status}).`,
    info_failed: (why) => `Model bilgisi alınamadı (${why}); ayarlar sınanmadan gönderilecek.`,
    metrics_failed: (why) => `Eğitim kaydı okunamadı (${why}).`,
    // The model panel: ModelConfig's fields (minillm/transformer.py), by name; the name itself is the tooltip.
    config: {
      vocab_size: "Sözlük boyutu (V)", d_model: "Model genişliği (C)", n_heads: "Dikkat kafası sayısı (H)",
      n_encoder_layers: "Kodlayıcı katmanı", n_decoder_layers: "Kod çözücü katmanı",
      d_ff: "İleri besleme genişliği", ffn: "İleri besleme türü", norm: "Normalizasyon", pos: "Konum bilgisi",
      dropout: "Dropout oranı", attention_dropout: "Dikkat dropout'u", ffn_dropout: "İleri besleme dropout'u",
      drop_path: "Stokastik derinlik (drop path)", layer_scale: "LayerScale başlangıç değeri",
      max_len: "En uzun dizi (konum)", max_src_len: "En uzun kodlayıcı girdisi (token)",
      pad_id: "Dolgu token'ının id'si",
      bos_id: "Başlangıç token'ının id'si", eos_id: "Bitiş token'ının id'si",
      tie_embeddings: "Girdi ve çıktı gömmeleri ortak", bias: "Doğrusal katmanlarda sapma (bias)",
      norm_eps: "Normalizasyon epsilonu", init_std: "Başlangıç standart sapması",
      fused: "Birleşik (fused) PyTorch çekirdekleri", copy: "Kaynaktan kopyalama (pointer-generator)",
      checkpoint: "Kontrol noktası",
    },
    config_values: { sinusoidal: "sinüzoidal" },
    tip_strategy: "Açgözlü: her adımda en olası token. Örnekleme: olasılığa göre rastgele. Işın: en iyi k diziyi birlikte izler.",
    tip_max_new_tokens: "Cevabın en çok kaç token olacağı; üst sınırı sunucu koyar.",
    tip_repetition_penalty: "Cevapta zaten geçen token'lar bu çarpanla daha az olası olur (CTRL, Keskar vd. 2019): " +
      ">1 tekrarı azaltır, 1 = kapalı. Her stratejide geçerli; küçük bir model en çok buna ihtiyaç duyar.",
    tip_no_repeat_ngram_size: "Cevapta aynı n token'lık dizi (n-gram) iki kez geçemez (Paulus vd. 2018: 3); " +
      "0 = kapalı. Her stratejide geçerli; küçük bir modelin aynı parçayı döngüyle yinelemesini önler.",
    tip_temperature: "Logitler bu sayıya bölünür: <1 daha kararlı, >1 daha çeşitli (yalnızca örneklemede).",
    tip_top_k: "Yalnızca en olası k token arasından seç (0 = kapalı; yalnızca örneklemede).",
    tip_top_p: "Olasılıkları toplamı p'ye ulaşan en küçük token kümesinden seç (1 = kapalı; yalnızca örneklemede).",
    tip_seed: "Aynı tohum, aynı örneklenmiş cevabı verir; boş = her seferinde farklı.",
    tip_num_beams: "Işın aramasında aynı anda izlenen dizi sayısı.",
    tip_length_penalty: "Işın puanı / uzunluk^α: büyük α uzun cevapları kayırır.",
    allowed: "İzin verilen",
  },
  en: {
    locale: "en-US",
    subtitle: "Q&A on Turkish law, by a hand-written transformer",
    toggle: "Türkçe",
    ask_title: "Ask a question",
    question_placeholder: "For example: How may fundamental rights and freedoms be restricted under the Constitution?",
    settings: "Decoding settings",
    strategy: "Strategy", max_new_tokens: "Max new tokens", temperature: "Temperature", top_k: "top-k",
    top_p: "top-p", num_beams: "Beams", length_penalty: "Length penalty", repetition_penalty: "Repetition penalty",
    no_repeat_ngram_size: "No-repeat n-gram", seed: "Seed", seed_placeholder: "random",
    greedy: "Greedy", sample: "Sampling", beam: "Beam search",
    value_greedy: "greedy", value_sample: "sampling", value_beam: "beam search",
    value_null: "none", value_true: "yes", value_false: "no",
    ask_button: "Ask",
    answer_title: "Answer", answer_empty: "No question asked yet.",
    language_note: "The model answers questions on Turkish law, in Turkish: it was trained on Turkish legal Q&A " +
      "only, so a question in English (or on another subject) gets an unrelated Turkish answer.",
    foreign_question: "This question does not look Turkish: the model answers questions on Turkish law, in " +
      "Turkish, so the answer below is most likely unrelated. Ask in Turkish (for example: «Kira sözleşmesi " +
      "nasıl feshedilir?»).",
    sources_title: "Sources",
    sources_hint: (n) => `Before answering, the model read ${n === 1 ? "this passage" : `these ${n} passages`} ` +
      "after the question, in this order; the encoder input and the heatmap mark each with the same number and colour.",
    sources_none: "No passage matched the question: the model read the question alone.",
    why_reference: "named in the question",
    why_bm25: (score) => `BM25 score ${score}`,
    source_tokens: (n) => `${n} tokens read`,
    show_all: (n) => `show all (${n} characters)`, show_less: "show less",
    label_article: (n, heading) => `Constitution art. ${n} — ${heading}`,
    label_pair: (n, heading) => `training pair ${n} — ${heading}`,
    short_article: (n) => `art. ${n}`, short_pair: (n) => `pair ${n}`, repealed: "repealed",
    seg_question: "question", seg_passage: (k) => `passage ${k}`,
    src_title_rag: "What the encoder read: the question, then the passages",
    src_hint_rag: "The question and each passage end with an <eos>; the coloured edge and label on the left say " +
      "which part each token comes from (numbered as under Sources). Each colour is one token, the number under " +
      "it its id.",
    retrieval_on: (a, p, nl, na) => `Retrieval: each question is followed by up to ${a} Constitution passage(s) and ` +
      `${p} training answer(s) (an article the question names first, then BM25), from ${nl} article passages and ` +
      `${na} training answers.`,
    retrieval_off: "No retrieval: the model reads the question alone.",
    src_title: "The question, as the model reads it",
    src_hint: "The tokenizer (BPE) cuts the question into these pieces; each colour is one token, the number under " +
      "it its id in the vocabulary.",
    src_hint_no_ids: "The tokenizer (BPE) cuts the question into these pieces; each colour is one token (this " +
      "server does not send the question's token ids).",
    tokens_title: "Answer tokens and their probabilities",
    tokens_hint: "Each box is one answer token: under it its id and the probability the model gave it; the colour " +
      "and the bar show the probability too.",
    prob_low: "low probability", prob_high: "high",
    marks_legend: "· = a space (the token starts with one); a piece like \\xc4 is one byte of a multi-byte letter.",
    attention_title: "Where did it look?",
    attention_hint: "Cross-attention: each row is an answer token, each column a question token; a dark cell means " +
      "the model looked hard at that part of the question while producing that answer token.",
    attention_hint_rag: "Cross-attention: each row is an answer token, each column a token the encoder read: the " +
      "question, then the passages (vertical lines part them, the coloured band on top says which passage); a dark " +
      "cell means the model looked hard there while producing that answer token.",
    heatmap_marks: "· = a space. Hover over (or tap) a cell: the answer token, the question token and the weight " +
      "appear below.",
    layer: "Layer", head: "Head", mean_heads: "mean over heads", mean_layers: "mean over layers",
    axis_question: "question tokens →", axis_answer: "answer tokens ↓", weight: "weight",
    axis_source: "tokens the encoder read →",
    cell_text: (i, a, j, q, w, where) => `answer #${i} «${a}» ← ${where ?? "question"} #${j} «${q}»: weight ${w}`,
    attention_kind: "Attention", kind_cross: "cross-attention (question → answer)",
    kind_self: "self-attention (answer → its earlier tokens)",
    self_attention_hint: "Self-attention: each row is an answer token, each column an earlier token the decoder " +
      "could read at that step (<bos>, then the answer tokens written before); the causal mask keeps everything " +
      "above the diagonal empty: the model cannot look at a token not yet written.",
    axis_earlier: "earlier tokens →",
    self_cell_text: (i, a, j, k, w) => `answer #${i} «${a}» ← earlier #${j} «${k}»: weight ${w}`,
    bos_tip: "<bos>: decoding starts here (position 0)",
    earlier_tip: (j, id) => `decoder input #${j}: answer token #${j - 1}, id ${id}`,
    steps_title: "Decoding, step by step",
    steps_hint: "Click an answer token: the most likely candidates at that step, on the left by the model's own " +
      "probabilities (softmax), on the right after the settings (repetition penalty, no-repeat n-gram, " +
      "temperature, top-k, top-p). The chosen token is in bold.",
    step_title: (i, tok) => `Step #${i}: «${tok}» was written`,
    cand_raw: "Model (before the settings)", cand_processed: "After the settings",
    cand_tip: (r, id, p) => `candidate ${r}, id ${id}, probability ${p}`,
    no_steps: "No step details for this answer.",
    training_title: "Training", model_title: "Model",
    working: "Generating…",
    done_status: (n, s, tps) => `${n} tokens, ${s} s (${tps} tokens/s)`,
    used: "Settings used",
    token_tip: (i, id, p) => `answer token #${i}, id ${id}, probability ${p}`,
    src_tip: (j, id, where) => `${where ?? "question"} token #${j}` + (id === undefined ? "" : `, id ${id}`),
    params: (n) => `${n} parameters`,
    no_log: (p) => `No training log (${p}); the curves appear here once training writes it.`,
    log_status: (n, p, t) => `${n} records, ${p} — refreshed every 5 seconds (last: ${t}).`,
    no_attention: "No attention weights for this answer.",
    run_info: (dev, prec, ntr, nval, world) =>
      `Training: ${dev} (${world === 1 ? "1 process" : `${world} processes`}), ${prec}; ${ntr} training and ` +
      `${nval} validation pairs.`,
    chart_loss: "Loss", chart_ppl: "Validation perplexity", chart_text: "BLEU / chrF (validation)",
    chart_lr: "Learning rate", lr: "learning rate", step: "step", train: "train", val: "validation",
    no_data: "no data yet",
    url_unknown: (name, known) => `The address's setting «${name}» is unknown; known ones: ${known}.`,
    url_bad: (name, label, why) => `The address's setting «${name}» (${label}) was refused: ${why}`,
    url_not_asked: "So the question was not asked; correct the setting and press «Ask».",
    field_bad: (label, why) => `${label}: ${why}`,
    must_choice: (raw, choices) => `must be one of ${choices} (got «${raw}»).`,
    must_int: (raw, range) => `must be a whole number with ${range} (got «${raw}»).`,
    must_number: (raw, range) => `must be a number with ${range} (got «${raw}»).`,
    must_lang: (raw) => `must be «tr» or «en» (got «${raw}»).`, language: "language",
    question_empty: "The question is empty: type one.",
    question_chars: (n, max) => `The question has ${n} characters; the server accepts at most ${max}.`,
    question_tokens: (max) => `The question is too long: the model reads at most ${max} tokens.`,
    server_field: (label, why) => `The server refused it: ${label} ${why}`,
    server_status: {
      400: "The server found the request invalid", 404: "The server has no such address",
      413: "The request is too large", 500: "The server failed", 503: "The model is busy; try again shortly",
    },
    server_other: (status) => `The server refused the request (HTTP ${status})`,
    server_said: (text) => `the server said: ${text}`,
    unreachable: "The server cannot be reached; is it running?",
    not_json: (status) => `The server sent an unexpected reply (HTTP ${status}).`,
    info_failed: (why) => `The model's details could not be loaded (${why}); settings go unchecked.`,
    metrics_failed: (why) => `The training log could not be read (${why}).`,
    config: {
      vocab_size: "Vocabulary size (V)", d_model: "Model width (C)", n_heads: "Attention heads (H)",
      n_encoder_layers: "Encoder layers", n_decoder_layers: "Decoder layers",
      d_ff: "Feed-forward width", ffn: "Feed-forward kind", norm: "Normalisation", pos: "Positions",
      dropout: "Dropout", attention_dropout: "Attention dropout", ffn_dropout: "Feed-forward dropout",
      drop_path: "Stochastic depth (drop path)", layer_scale: "LayerScale initial value",
      max_len: "Longest sequence (positions)", max_src_len: "Longest encoder input (tokens)",
      pad_id: "Padding token id",
      bos_id: "Start token id", eos_id: "End token id",
      tie_embeddings: "Input and output embeddings tied", bias: "Biases in linear layers",
      norm_eps: "Norm epsilon", init_std: "Initial standard deviation",
      fused: "Fused PyTorch kernels", copy: "Copying from the source (pointer-generator)", checkpoint: "Checkpoint",
    },
    config_values: { sinusoidal: "sinusoidal" },
    tip_strategy: "Greedy: the most likely token each step. Sampling: random by probability. Beam: follows the k best sequences.",
    tip_max_new_tokens: "The most tokens the answer may have; the server sets the upper bound.",
    tip_repetition_penalty: "Tokens already in the answer become less likely by this factor (CTRL, Keskar et al. " +
      "2019): > 1 discourages repeats, 1 = off. Every strategy; what a small model needs most.",
    tip_no_repeat_ngram_size: "The answer never holds the same n-token sequence (n-gram) twice (Paulus et al. " +
      "2018 used 3); 0 = off. Every strategy; stops a small model from looping over one phrase.",
    tip_temperature: "Logits are divided by this: <1 more confident, >1 more varied (sampling only).",
    tip_top_k: "Sample only among the k most likely tokens (0 = off; sampling only).",
    tip_top_p: "Sample from the smallest set of tokens whose probabilities reach p (1 = off; sampling only).",
    tip_seed: "The same seed gives the same sampled answer; empty = different every time.",
    tip_num_beams: "How many sequences beam search follows at once.",
    tip_length_penalty: "Beam score / length^α: larger α favours longer answers.",
    allowed: "Allowed",
  },
};

// Names a URL may carry besides the decoding settings: the question (asked at once) and the page's language.
const PAGE_PARAMS = ["q", "lang"];

const state = {
  lang: "tr", info: null, answer: null, metrics: null, metricsVersion: undefined,
  step: 0,            // the answer token whose candidates the step view shows (a click on a chip picks it)
  openSources: new Set(),  // the sources whose whole text is shown (by their place in the list)
  urlOnly: {},        // settings from the URL the page has no control for: still sent, so none is dropped
  message: null,      // () => lines of the current problem, in the current language (redrawn on a switch)
};

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

function htmlEl(tag, className, text, parent) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  if (parent) parent.appendChild(el);
  return el;
}

// ---------------------------------------------------------------------------------------------------------------
// Numbers in the page's language: Turkish writes 0,25 and 52.480, English 0.25 and 52,480.
// ---------------------------------------------------------------------------------------------------------------

const formatters = new Map();  // subtle: building an Intl.NumberFormat is slow, and the heatmap formats 10^4 cells
function num(v, options = {}) {
  const key = state.lang + JSON.stringify(options);
  if (!formatters.has(key)) formatters.set(key, new Intl.NumberFormat(t("locale"), options));
  return formatters.get(key).format(v);
}

const SUPERSCRIPT = { "-": "⁻", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };

// 2.5e-4 as "2,5×10⁻⁴" (Turkish) or "2.5×10⁻⁴": the mantissa with `digits` decimals in the page's language.
function sci(v, digits) {
  const [mantissa, exponent] = v.toExponential(digits).split("e");
  const power = String(Number(exponent)).replace(/[-0-9]/g, (c) => SUPERSCRIPT[c]);
  return `${num(Number(mantissa), { minimumFractionDigits: digits, maximumFractionDigits: digits })}×10${power}`;
}

// A number in at most 4 significant digits; tiny or huge ones (learning rates, seeds) in exponent form.
function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return sci(v, 1);
  return num(v, { maximumSignificantDigits: 4 });
}

// A setting's value as the page shows it: "açgözlü", "yok", 0,9.
function showValue(v) {
  if (v === null || v === undefined) return t("value_null");
  if (typeof v === "boolean") return t(v ? "value_true" : "value_false");
  if (typeof v === "number") return Number.isInteger(v) && Math.abs(v) < 1e15 ? num(v, { useGrouping: false })
    : fmt(v);
  const named = I18N[state.lang][`value_${v}`];
  return named === undefined ? String(v) : named;
}

// ---------------------------------------------------------------------------------------------------------------
// Settings: each is checked by /api/info's rule (ranges[name]: type, min, max, min_inclusive; strategies), as
// the server will check it, so a refusal is explained here, in the page's language, before anything is sent.
// ---------------------------------------------------------------------------------------------------------------

// The decoding controls, in the form's order: every input/select in the fieldset, its id the setting's name.
const settingControls = () => Array.from(document.querySelectorAll("#settings input, #settings select"));

// Every setting the API knows: /api/info's defaults name them all (the page's controls if /api/info failed).
const knownSettings = () => (state.info ? Object.keys(state.info.defaults) : settingControls().map((c) => c.id));

const settingLabel = (name) => I18N[state.lang][name] ?? name;

// "1 ≤ x ≤ 24", "0 < x ≤ 1", "x ≥ 1": a setting's range, its numbers in the page's language.
function rangeText(range) {
  const low = `${fmt(range.min)} ${range.min_inclusive ? "≤" : "<"} x`;
  return range.max === null ? `x ${range.min_inclusive ? "≥" : ">"} ${fmt(range.min)}` : `${low} ≤ ${fmt(range.max)}`;
}

const INT_TEXT = /^[+-]?\d+$/;
const NUMBER_TEXT = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

// Check one setting given as text (a URL parameter or a control's value): {value}, or {why}: a function that
// says what is wrong in the language of the moment (so a language switch can say it again). Integers stay
// exact: one beyond 2^53 (a seed may reach 2^63 - 1) is kept as a BigInt and sent digit for digit.
function checkSetting(name, raw) {
  const info = state.info;
  if (name === "strategy") {
    const choices = info ? info.strategies : Array.from($("strategy").options, (o) => o.value);
    return choices.includes(raw) ? { value: raw } : { why: () => t("must_choice", raw, choices.join(", ")) };
  }
  const range = info && info.ranges[name];
  const isInt = range ? range.type === "int" : $(name)?.step === "1";
  const refuse = () => ({ why: () => t(isInt ? "must_int" : "must_number", raw, rangeOf(name)) });
  if (isInt) {
    if (!INT_TEXT.test(raw)) return refuse();
    const big = BigInt(raw);
    if (range) {
      // subtle: JSON numbers past 2^53 arrive rounded (2^63 - 1 reads as 2^63); the server then has the last word.
      const tooLow = range.min_inclusive ? big < BigInt(range.min) : big <= BigInt(range.min);
      if (tooLow || (range.max !== null && big > BigInt(range.max))) return refuse();
    }
    return { value: Number.isSafeInteger(Number(big)) ? Number(big) : big };
  }
  const value = Number(raw);
  if (!NUMBER_TEXT.test(raw) || !Number.isFinite(value)) return refuse();
  if (range) {
    const tooLow = range.min_inclusive ? value < range.min : value <= range.min;
    if (tooLow || (range.max !== null && value > range.max)) return refuse();
  }
  return { value };
}

// The request's settings from the controls (an empty box keeps the server's default), plus any URL-only ones.
// Problems (functions giving one sentence each, naming the setting) go into `problems`.
function readSettings(problems) {
  const settings = {};
  for (const control of settingControls()) {
    const raw = control.value.trim();
    const name = control.id;
    control.removeAttribute("aria-invalid");
    if (control.validity && control.validity.badInput) {  // typed text a number box cannot hold: value is ""
      problems.push(() => t("field_bad", settingLabel(name), t("must_number", "?", rangeOf(name))));
      control.setAttribute("aria-invalid", "true");
      continue;
    }
    if (raw === "") continue;
    const checked = checkSetting(name, raw);
    if (checked.why) {
      problems.push(() => t("field_bad", settingLabel(name), checked.why()));
      control.setAttribute("aria-invalid", "true");
    } else {
      settings[name] = checked.value;
    }
  }
  return Object.assign(settings, state.urlOnly);
}

const rangeOf = (name) => (state.info && state.info.ranges[name] ? rangeText(state.info.ranges[name]) : "x");

// JSON.stringify cannot write a BigInt; this writes it as the plain integer it is.
function toJson(obj) {
  const fields = Object.entries(obj).map(([k, v]) =>
    `${JSON.stringify(k)}:${typeof v === "bigint" ? v.toString() : JSON.stringify(v)}`);
  return `{${fields.join(",")}}`;
}

// /?q=...&strategy=beam&no_repeat_ngram_size=3&lang=en: every setting the API knows is checked and put into its
// control (or kept for the request, if the page has none); an unknown name or a refused value is reported, as
// the API would refuse it, and the question is then not asked. Returns the problems (functions, as above).
function applyUrlSettings(params) {
  const problems = [];
  const known = knownSettings();
  for (const [name, raw] of params) {
    if (PAGE_PARAMS.includes(name)) continue;
    if (!known.includes(name)) {
      problems.push(() => t("url_unknown", name, PAGE_PARAMS.concat(known).join(", ")));
      continue;
    }
    if (raw.trim() === "") {  // "seed=": as an empty box, the server's default (for the seed: a fresh one)
      if ($(name)) $(name).value = "";
      continue;
    }
    const checked = checkSetting(name, raw.trim());
    if (checked.why) {
      problems.push(() => t("url_bad", name, settingLabel(name), checked.why()));
    } else if ($(name)) {
      $(name).value = raw.trim();
    } else {
      state.urlOnly[name] = checked.value;
    }
  }
  return problems;
}

// The ask panel's one place for problems: `problems` are functions (each gives one sentence in the language of
// the moment), so a language switch says them again; null clears it.
function showMessage(problems) {
  state.message = problems;
  const box = $("message");
  const lines = problems ? problems.map((say) => say()) : [];
  const text = lines.length > 1 ? lines.map((line) => `• ${line}`).join("\n") : lines.join("");
  box.textContent = text;
  box.hidden = text === "";
}

// ---------------------------------------------------------------------------------------------------------------
// The server's refusals, in the page's language. A refused field is recognised by its name ("field 'top_p' must
// be ...") and explained by its range from /api/info; any other refusal by its HTTP status, with the server's own
// words added when the page cannot say more.
// ---------------------------------------------------------------------------------------------------------------

function explainServerError(status, text) {
  const field = /^field '(\w+)'/.exec(text || "");
  if (field && field[1] === "question") {
    const tokens = /reads at most (\d+)/.exec(text);
    const chars = /has (\d+) characters; the limit is (\d+)/.exec(text);
    if (tokens) return t("question_tokens", tokens[1]);
    if (chars) return t("question_chars", chars[1], chars[2]);
    if (/is empty|is missing/.test(text)) return t("question_empty");
  } else if (field && state.info && field[1] in state.info.defaults) {
    const name = field[1];
    const got = /got (.*?)(;|$)/.exec(text);
    const raw = got ? got[1] : "?";
    const kind = name === "strategy" ? "choice" : state.info.ranges[name].type;
    const why = kind === "choice" ? t("must_choice", raw, state.info.strategies.join(", "))
      : t(kind === "int" ? "must_int" : "must_number", raw, rangeOf(name));
    return t("server_field", settingLabel(name), why);
  }
  const generic = I18N[state.lang].server_status[status] ?? t("server_other", status);
  if (status === 503) return `${generic}.`;
  return text ? `${generic}; ${t("server_said", text)}` : `${generic}.`;
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
  $("lang-toggle").textContent = t("toggle");
  showRanges();
  if (state.info) renderInfo(state.info);
  if (state.message) showMessage(state.message);
  if (state.answer) {
    renderAnswer(state.answer);
    for (const opt of document.querySelectorAll("#layer-select option[value=mean]")) opt.text = t("mean_layers");
    for (const opt of document.querySelectorAll("#head-select option[value=mean]")) opt.text = t("mean_heads");
  }
  drawHeatmap();      // also before any answer: it writes the heatmap's hint, in this language
  drawHeatScale();
  if (state.metrics) renderMetrics(state.metrics);
}

// Each control's label shows its range ("1 ≤ x ≤ 24", from /api/info), and its tooltip explains it.
function showRanges() {
  document.querySelectorAll("#settings label[data-tip]").forEach((label) => {
    const control = label.querySelector("input, select");
    let tip = t(label.dataset.tip);
    let range = label.querySelector(".range");
    const bounds = state.info && state.info.ranges[control.id];
    if (bounds) {
      if (!range) label.insertBefore(range = htmlEl("small", "range"), control);
      range.textContent = rangeText(bounds);
      tip += `\n${t("allowed")}: ${rangeText(bounds)}`;
    }
    label.title = tip;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Asking: controls -> request -> answer, the question's tokens, token probabilities, heatmap
// ---------------------------------------------------------------------------------------------------------------

// Grey out the controls the chosen strategy ignores (they are still sent; generation ignores them too).
function updateInactiveControls() {
  const strategy = $("strategy").value;
  document.querySelectorAll("#settings label[data-for]").forEach((label) => {
    label.classList.toggle("inactive", label.dataset.for !== strategy);
  });
}

async function ask(event) {
  if (event) event.preventDefault();
  const question = $("question").value.trim();
  const problems = [];
  const settings = readSettings(problems);
  const maxChars = state.info ? state.info.limits.max_question_chars : Infinity;
  if (question === "") problems.unshift(() => t("question_empty"));
  else if (question.length > maxChars) problems.unshift(() => t("question_chars", question.length, maxChars));
  if (problems.length) {
    showMessage(problems);
    return;
  }
  showMessage(null);
  const status = $("status");
  $("ask-button").disabled = true;
  status.textContent = t("working");
  try {
    let response;
    try {
      response = await fetch("/api/generate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: toJson(Object.assign({ question }, settings)),
      });
    } catch (err) {
      throw { say: () => t("unreachable") };
    }
    let body;
    try {
      body = await response.json();
    } catch (err) {
      throw { say: () => t("not_json", response.status) };
    }
    if (!response.ok) throw { say: () => explainServerError(response.status, body.error) };
    state.answer = body;
    state.step = 0;
    state.openSources = new Set();
    renderAnswer(body);
    buildHeatmapSelectors(body);
    drawHeatmap();
  } catch (err) {
    // Shown once, in the ask panel; the last good answer stays below, its question shown as tokens.
    status.textContent = "";
    showMessage([err.say || (() => String(err))]);
  } finally {
    $("ask-button").disabled = false;
  }
}

// Light orange (unlikely) -> pale yellow -> light blue (likely): distinct for colour-blind readers too.
function probColor(p) {
  const stops = [[247, 190, 170], [255, 240, 190], [182, 214, 242]];
  const pos = Math.min(Math.max(p, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(pos), stops.length - 2);
  const c = stops[i].map((a, k) => Math.round(a + (pos - i) * (stops[i + 1][k] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// A token as shown: a space becomes "·", so " hak" and "hak" differ visibly.
const showTok = (s) => s.replace(/ /g, "·");

// Two decimals, or one significant digit below 0.01 (an untrained model's 0.002 is not "0,00").
const showProb = (p) => (p === null || p === undefined ? "–"
  : p >= 0.01 ? num(p, { minimumFractionDigits: 2, maximumFractionDigits: 2 }) : sci(p, 0));

// ---------------------------------------------------------------------------------------------------------------
// Retrieval: a model trained with it reads `question <eos> passage 1 <eos> passage 2 <eos> ...`. /api/generate's
// sources name each passage (id, article or pair, heading, score, how) with the span [start, end) of its tokens in
// src_ids, its <eos> included. The segments are the question, then the passages: segment k >= 1 is sources[k - 1],
// with one number and one colour in the sources list, the encoder-input chips and the heatmap.
// ---------------------------------------------------------------------------------------------------------------

const SEGMENT_COLORS = ["#1f5fbf", "#e8590c", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285"];
const segColor = (k) => (k === 0 ? "#5d6677" : SEGMENT_COLORS[(k - 1) % SEGMENT_COLORS.length]);
const segName = (k) => (k === 0 ? t("seg_question") : t("seg_passage", k));
const given = (v) => v !== null && v !== undefined;

// [{start, end, source}]: the question (source null), then each passage. One segment, the whole input, when
// there are no sources or their spans do not tile src_tokens exactly (then nothing is marked rather than
// something marked wrong).
function segmentsOf(body) {
  const S = (body.src_tokens || []).length;
  const sources = Array.isArray(body.sources) ? body.sources : [];
  const segs = [{ start: 0, end: sources.length ? sources[0].start : S, source: null }];
  for (const s of sources) segs.push({ start: s.start, end: s.end, source: s });
  const tiles = segs.every((g, k) => Number.isInteger(g.start) && Number.isInteger(g.end) && g.start < g.end &&
    g.start === (k === 0 ? 0 : segs[k - 1].end)) && segs[segs.length - 1].end === S;
  return tiles ? segs : [{ start: 0, end: S, source: null }];
}

// Where a passage came from, in the page's language (the heading is the data's own Turkish): in Turkish exactly
// minillm.corpus.Passage.label(), "Anayasa md. 2 — Cumhuriyetin nitelikleri", "eğitim çifti 17 — <question>".
function sourceLabel(s) {
  const heading = s.heading === "mülga" ? t("repealed") : s.heading;
  if (given(s.article)) return t("label_article", s.article, heading);
  if (given(s.pair)) return t("label_pair", s.pair, heading);
  return s.label ?? s.id;
}

const sourceShort = (s) => (given(s.article) ? t("short_article", s.article)
  : given(s.pair) ? t("short_pair", s.pair) : s.id);

// Why the retriever chose it: the question names the article, or BM25 scored it (one decimal, as the page writes
// numbers: 7,8 in Turkish).
const sourceWhy = (s) => (s.how === "reference" ? t("why_reference")
  : t("why_bm25", given(s.score) ? num(s.score, { minimumFractionDigits: 1, maximumFractionDigits: 1 }) : "–"));

// A segment's label before its chips and on the heatmap's band: "soru", "1. pasaj · md. 13".
const segMark = (k, source) => (k === 0 ? segName(0) : `${segName(k)} · ${sourceShort(source)}`);

const SOURCE_PREVIEW = 240;  // characters of a passage shown until "show all" is pressed

// The "Sources" list under the answer. Hidden for a model that does not retrieve (no sources in the reply, or
// /api/info says so); a retrieving model that found nothing says so.
function renderSources(body) {
  const box = $("sources-box");
  const list = $("sources");
  clear(list);
  const sources = Array.isArray(body.sources) ? body.sources : null;
  const retrieves = Boolean(state.info && state.info.retrieval);
  box.hidden = sources === null || (sources.length === 0 && !retrieves);
  if (sources === null) return;
  $("sources-note").textContent = sources.length ? t("sources_hint", sources.length) : t("sources_none");
  sources.forEach((s, n) => {
    const k = n + 1;
    const item = htmlEl("li", "source", undefined, list);
    item.dataset.id = s.id;
    item.style.borderLeftColor = segColor(k);
    const head = htmlEl("div", "source-head", undefined, item);
    htmlEl("span", "seg-badge", String(k), head).style.background = segColor(k);
    htmlEl("span", "source-label", sourceLabel(s), head);
    htmlEl("span", "source-why", sourceWhy(s), head);
    if (Number.isInteger(s.start) && Number.isInteger(s.end)) {
      htmlEl("span", "source-read", t("source_tokens", num(s.end - s.start - 1)), head);  // its <eos> not counted
    }
    renderSourceText(item, s, n);
  });
}

// A passage's text: the first SOURCE_PREVIEW characters, and a button that shows the rest (and hides it again).
function renderSourceText(item, s, n) {
  const text = htmlEl("p", "source-text", undefined, item);
  const long = s.text.length > SOURCE_PREVIEW;
  const open = !long || state.openSources.has(n);
  text.textContent = open ? s.text : `${s.text.slice(0, SOURCE_PREVIEW).trimEnd()}…`;
  if (!long) return;
  const more = htmlEl("button", "source-more", open ? t("show_less") : t("show_all", num(s.text.length)), item);
  more.type = "button";
  more.setAttribute("aria-expanded", String(open));
  more.addEventListener("click", () => {
    if (state.openSources.has(n)) state.openSources.delete(n);
    else state.openSources.add(n);
    renderSources(state.answer);
  });
}

// The encoder input as chips, one per token, coloured in turn so the BPE cuts show. A retrieving model's input
// is cut into its segments: one row each, with a coloured edge and a label (the sources list's number).
function renderSourceTokens(body) {
  const srcIds = body.src_ids;
  const srcTokens = body.src_tokens || [];
  const segs = segmentsOf(body);
  const marked = segs.length > 1;
  const title = $("src-title");
  title.dataset.i18n = marked ? "src_title_rag" : "src_title";
  title.textContent = t(title.dataset.i18n);
  $("src-hint").textContent = t(marked ? "src_hint_rag" : srcIds ? "src_hint" : "src_hint_no_ids");
  const src = $("src-tokens");
  clear(src);
  segs.forEach((seg, k) => {
    const row = marked ? htmlEl("div", "segment", undefined, src) : src;
    const where = k === 0 ? undefined : `${segName(k)} (${sourceLabel(seg.source)})`;
    if (marked) {
      row.dataset.seg = String(k);
      row.style.borderLeftColor = segColor(k);
      const mark = htmlEl("span", "seg-mark", segMark(k, seg.source), row);
      mark.style.background = segColor(k);
      mark.title = k === 0 ? segName(0) : `${where}: ${sourceWhy(seg.source)}`;
    }
    for (let j = seg.start; j < seg.end; j++) {
      const tok = srcTokens[j];
      const special = /^<[a-z]+>$/.test(tok);
      const chip = htmlEl("span", `tok src c${j % 6}${special ? " special" : ""}`, undefined, row);
      chip.dataset.seg = String(k);
      chip.title = t("src_tip", j, srcIds ? srcIds[j] : undefined, where);
      htmlEl("span", "t", showTok(tok), chip);
      if (srcIds) htmlEl("span", "id", String(srcIds[j]), chip);
    }
  });
}

// A question that is plainly not Turkish: no Turkish letter, and two or more common English words. The model
// then answers something unrelated in Turkish, and the page says why instead of letting the answer look wrong.
const ENGLISH_WORDS = new Set(["the", "what", "is", "are", "how", "does", "do", "can", "of", "in", "a", "an", "to",
  "which", "who", "when", "why", "my", "i", "law", "right", "rights", "constitution"]);
function looksForeign(question) {
  if (/[çğıöşüÇĞİÖŞÜ]/.test(question)) return false;
  const words = question.toLowerCase().match(/[a-z]+/g) || [];
  return words.filter((w) => ENGLISH_WORDS.has(w)).length >= 2;
}

function renderAnswer(body) {
  const answer = $("answer");
  answer.dataset.state = "done";
  answer.textContent = body.answer;
  $("answer-note").hidden = !looksForeign(body.question);
  $("status").textContent = t("done_status", num(body.ids.length),
    num(body.elapsed_s, { maximumSignificantDigits: 3 }),
    body.tokens_per_s === null ? "–" : num(body.tokens_per_s, { maximumFractionDigits: 1 }));

  // The passages the model read, then the question and the passages as the encoder reads them: /api/generate
  // sends the tokens' strings; their ids only if it sends src_ids.
  renderSources(body);
  renderSourceTokens(body);

  // One chip per generated token: its string, its id, its probability as a number, a colour and a bar.
  const tokens = $("tokens");
  clear(tokens);
  const strings = body.tgt_tokens || body.ids.map(String);
  strings.forEach((tok, i) => {
    const p = body.token_probs ? body.token_probs[i] : null;
    const chip = htmlEl("span", "tok pick", undefined, tokens);
    chip.dataset.i = String(i);
    chip.tabIndex = 0;            // a click, or Enter, shows this step's candidates
    chip.setAttribute("role", "button");
    chip.addEventListener("click", () => { state.step = i; renderStep(); });
    chip.addEventListener("keydown", (event) => { if (event.key === "Enter") { state.step = i; renderStep(); } });
    if (p !== null && p !== undefined) chip.style.background = probColor(p);
    chip.title = t("token_tip", i, body.ids[i], showProb(p));
    htmlEl("span", "t", showTok(tok), chip);
    const line = htmlEl("span", "meta", undefined, chip);
    htmlEl("span", "id", String(body.ids[i]), line);
    htmlEl("span", "p", showProb(p), line);
    const bar = htmlEl("span", "bar", undefined, chip);
    htmlEl("span", "", undefined, bar).style.width = `${Math.round(100 * (p || 0))}%`;
  });

  renderStep();

  // The settings the server actually used (after its defaults and caps), so a learner sees what reached
  // generate; those the strategy ignores are dimmed, as their controls are.
  const used = $("used-settings");
  used.dataset.settings = JSON.stringify(body.settings);
  clear(used);
  htmlEl("span", "used-title", `${t("used")}:`, used);
  for (const [name, value] of Object.entries(body.settings)) {
    const forStrategy = $(name)?.closest("label")?.dataset.for;
    const pill = htmlEl("span", forStrategy && forStrategy !== body.settings.strategy ? "kv inactive" : "kv",
      undefined, used);
    pill.append(htmlEl("span", "k", settingLabel(name)), " ", htmlEl("b", "", showValue(value)));
  }
}

// One decoding step: the top candidates by the model's own softmax ("raw") and after the processors the settings
// switch on ("processed"), as bars; the token the answer took is in bold. steps[i] = {raw, processed}, each a list
// of {id, token, p}, best first.
function renderStep() {
  const view = $("step-view");
  clear(view);
  const body = state.answer;
  for (const chip of document.querySelectorAll("#tokens .tok.pick")) {
    chip.classList.toggle("selected", Number(chip.dataset.i) === state.step);
  }
  if (!body) return;
  if (!body.steps || body.steps.length === 0) {
    htmlEl("p", "hint", t("no_steps"), view);
    return;
  }
  const i = Math.min(state.step, body.steps.length - 1);
  htmlEl("p", "step-title", t("step_title", i, showTok((body.tgt_tokens || [])[i] ?? String(body.ids[i]))), view);
  const lists = htmlEl("div", "cand-lists", undefined, view);
  for (const kind of ["raw", "processed"]) {
    const col = htmlEl("div", `cand-list ${kind}`, undefined, lists);
    htmlEl("h4", "", t(`cand_${kind}`), col);
    body.steps[i][kind].forEach((c, r) => {
      const row = htmlEl("div", c.id === body.ids[i] ? "cand chosen" : "cand", undefined, col);
      row.title = t("cand_tip", r + 1, c.id, showProb(c.p));
      htmlEl("span", "ct", showTok(c.token), row);
      const bar = htmlEl("span", "bar", undefined, row);
      htmlEl("span", "", undefined, bar).style.width = `${Math.round(100 * (c.p || 0))}%`;
      htmlEl("span", "cp", showProb(c.p), row);
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The attention heatmap. cross_attention is (L, H, T, S): rows are answer tokens, columns question tokens.
// self_attention is (L, H, T, T): rows are answer tokens, columns the decoder's inputs (<bos>, then the answer
// shifted by one), so row i sees columns 0..i only (the causal mask).
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
  // Numbered from 0, as the model's modules and the lesson's printer number them ("decoder layer 3 of 0..3").
  for (let l = 0; l < L; l++) layerSel.add(new Option(String(l), String(l)));
  layerSel.add(new Option(t("mean_layers"), "mean"));
  layerSel.value = String(L - 1);  // the last layer: the one closest to the output
  headSel.add(new Option(t("mean_heads"), "mean"));
  for (let h = 0; h < H; h++) headSel.add(new Option(String(h), String(h)));
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
  const shown = showTok(s);
  return shown.length > 14 ? shown.slice(0, 13) + "…" : shown;
};

// subtle: colours follow sqrt(weight) on a fixed 0..1 scale. Scaling to the largest weight shown would paint
// uniform attention (every weight 1/S, "looked everywhere") as solid dark, the same as a sharp peak; the square
// root keeps small weights visible without that lie.
const heatShade = (w) => heatColor(Math.sqrt(Math.min(Math.max(w, 0), 1)));
const SCALE_TICKS = [0, 0.05, 0.25, 0.5, 1];

// The colour scale, beside the selectors: weight 0 on the left, 1 on the right, ticks on the square-root axis.
function drawHeatScale() {
  const svg = $("heat-scale");
  clear(svg);
  const x0 = 6, w = 200;
  const defs = svgEl("defs", {}, svg);
  const grad = svgEl("linearGradient", { id: "heat-grad", x1: 0, y1: 0, x2: 1, y2: 0 }, defs);
  for (let k = 0; k <= 4; k++) svgEl("stop", { offset: k / 4, "stop-color": heatColor(k / 4) }, grad);
  svgEl("rect", { x: x0, y: 2, width: w, height: 10, fill: "url(#heat-grad)", stroke: "#9aa3b2" }, svg);
  for (const v of SCALE_TICKS) {
    svgText(svg, x0 + Math.sqrt(v) * w, 26, num(v), { class: "legend", "text-anchor": "middle" });
  }
  svgEl("title", {}, svg).textContent = t("weight");
}

// Geometry: a label for every row and every column, so each cell can be named. Rows are at least 13 px (11 px
// text); a long answer scrolls inside #heatmap-wrap under a header (the question's tokens) that stays in view. A
// retrieving model's columns are the question and then each passage (S can be a few hundred): a band over each
// segment's columns names it, a line down the grid marks where each passage starts, and the grid scrolls sideways
// inside #heatmap-wrap rather than widening the page.
function drawHeatmap() {
  const head = $("heatmap-head");
  const svg = $("heatmap");
  clear(head);
  clear(svg);
  $("heatmap-readout").textContent = "";
  const self = $("attention-kind").value === "self";
  const body = state.answer;
  const segs = body && !self ? segmentsOf(body) : [];
  $("attention-hint").textContent = t(self ? "self_attention_hint" : segs.length > 1 ? "attention_hint_rag"
    : "attention_hint");
  const att = body && (self ? body.self_attention : body.cross_attention);
  if (!att || att.length === 0) {
    for (const el of [head, svg]) { el.setAttribute("width", 0); el.setAttribute("height", 0); }
    if (body) {
      svg.setAttribute("width", 300);
      svg.setAttribute("height", 30);
      svgText(svg, 0, 20, t("no_attention"), { class: "legend" });
    }
    return;
  }
  const m = attentionMatrix(att, $("layer-select").value, $("head-select").value);
  const T = m.length;
  const S = T > 0 ? m[0].length : 0;
  // The segments are marked only where they cover the heatmap's columns exactly.
  const marked = segs.length > 1 && segs[segs.length - 1].end === S;
  const colSeg = new Array(S).fill(0);               // column -> its segment: 0 the question, k passage k
  if (marked) segs.forEach((seg, k) => colSeg.fill(k, seg.start, seg.end));
  const where = segs.map((seg, k) => (marked && k > 0 ? `${segName(k)} (${sourceShort(seg.source)})` : undefined));
  const tgtFull = body.tgt_tokens || [];
  // The columns: the encoder's input, or (self-attention) what the decoder read: <bos>, then the answer so far.
  const srcFull = self ? ["<bos>"].concat(tgtFull.slice(0, Math.max(T - 1, 0))) : body.src_tokens || [];
  const colTip = (j) => (!self ? t("src_tip", j, body.src_ids ? body.src_ids[j] : undefined, where[colSeg[j]])
    : j === 0 ? t("bos_tip") : t("earlier_tip", j, body.ids[j - 1]));
  const cellText = (i, j) => t(self ? "self_cell_text" : "cell_text", i, showTok(tgtFull[i] ?? ""), j,
    showTok(srcFull[j] ?? ""), weight(m[i][j]), where[colSeg[j]]);
  const srcTok = srcFull.map(shortTok);
  const tgtTok = tgtFull.map(shortTok);
  const longest = (arr) => arr.reduce((a, s) => Math.max(a, s.length), 1);
  const weight = (w) => num(w, { minimumFractionDigits: 3, maximumFractionDigits: 3 });

  const charW = 6.8;
  const band = marked ? 18 : 0;                      // the segments' band, under the column labels
  const left = Math.max(16 + charW * longest(tgtTok), 40);
  const top = 22 + 0.87 * charW * longest(srcTok) + band;  // labels turned 60 degrees: 0.87 x their length high
  const avail = Math.max(($("heatmap-wrap").clientWidth || 900) - left - 12, 120);
  const fit = (space, n, low) => Math.max(low, Math.min(28, Math.floor(space / Math.max(n, 1))));
  const cw = fit(avail, S, 13);
  const ch = fit(640, T, 13);
  const width = left + S * cw + 12;
  head.setAttribute("width", width);
  head.setAttribute("height", top);
  svg.setAttribute("width", width);
  svg.setAttribute("height", T * ch + 4);

  // The axis titles share the first line: "answer tokens ↓" over the row labels, "question tokens →" after it.
  const axis = self ? "axis_earlier" : marked ? "axis_source" : "axis_question";
  svgText(head, 2, 12, t("axis_answer"), { class: "legend" });
  svgText(head, Math.max(left, 2 + 6 * t("axis_answer").length + 14), 12, t(axis), { class: "legend" });
  // Each label sits in a group with its tooltip (a <title> inside the <text> would join the label's own text).
  const labelY = top - band - 4;
  const srcLabels = srcTok.slice(0, S).map((tok, j) => {
    const x = left + j * cw + cw / 2 + 3;
    const group = svgEl("g", {}, head);
    svgEl("title", {}, group).textContent = colTip(j);
    return svgText(group, x, labelY, tok, { transform: `rotate(-60 ${x} ${labelY})`, class: "src-label" });
  });
  while (srcLabels.length < S) srcLabels.push(svgText(head, left + srcLabels.length * cw, labelY, "?"));
  const tgtLabels = [];
  for (let i = 0; i < T; i++) {
    const group = svgEl("g", {}, svg);
    const p = body.token_probs ? body.token_probs[i] : null;
    svgEl("title", {}, group).textContent = t("token_tip", i, body.ids[i], showProb(p));
    tgtLabels.push(svgText(group, left - 4, i * ch + ch / 2 + 4, tgtTok[i] ?? String(i),
      { "text-anchor": "end", class: "tgt-label" }));
  }
  const grid = svgEl("g", { class: "cells" }, svg);
  for (let i = 0; i < T; i++) {
    for (let j = 0; j < S; j++) {
      const rect = svgEl("rect", {
        class: "cell", x: left + j * cw, y: i * ch, width: cw - 1, height: ch - 1, fill: heatShade(m[i][j]),
        "data-i": i, "data-j": j,
      }, grid);
      // The hover text names the answer token, the column's token (and its passage) and the weight.
      svgEl("title", {}, rect).textContent = cellText(i, j);
    }
  }
  const bandNames = marked ? drawSegments(head, svg, segs, { left, cw, top, band, height: T * ch }) : [];

  // Hover or tap: the cell's row and column labels (and its passage's band) light up, and the readout below says
  // what the cell is.
  let lit = [];
  const show = (event) => {
    const cell = event.target.closest("rect.cell");
    if (!cell) return;
    for (const el of lit) el.classList.remove("lit");
    const i = Number(cell.dataset.i);
    const j = Number(cell.dataset.j);
    lit = [tgtLabels[i], srcLabels[j], bandNames[colSeg[j]]].filter(Boolean);
    for (const el of lit) el.classList.add("lit");
    $("heatmap-readout").textContent = cellText(i, j);
  };
  grid.addEventListener("pointerover", show);
  grid.addEventListener("click", show);
}

// The segments on the heatmap: a band over each one's columns in the header (its number, colour and source; the
// whole label as its tooltip) and a line down the grid where each passage starts, which lets the pointer through
// to the cells. g: the heatmap's geometry. Returns the bands' texts, in segment order.
function drawSegments(head, svg, segs, g) {
  return segs.map((seg, k) => {
    const x = g.left + seg.start * g.cw;
    const width = (seg.end - seg.start) * g.cw - 1;
    const group = svgEl("g", { class: "seg-band", "data-seg": k }, head);
    svgEl("title", {}, group).textContent = k === 0 ? segName(0)
      : `${segName(k)}: ${sourceLabel(seg.source)} (${sourceWhy(seg.source)})`;
    svgEl("rect", { x, y: g.top - g.band + 2, width, height: g.band - 5, fill: segColor(k), "fill-opacity": 0.16,
      stroke: segColor(k) }, group);
    if (k > 0) {
      svgEl("line", { class: "seg-line", x1: x - 0.5, x2: x - 0.5, y1: 0, y2: g.height, stroke: segColor(k),
        "stroke-width": 2, "pointer-events": "none" }, svg);
    }
    const names = [segMark(k, seg.source), segName(k), k === 0 ? "" : String(k)];
    return svgText(group, x + 3, g.top - 6, fitText(names, width - 6), { class: "seg-name" });
  });
}

// The first of `texts` that fits in `width` pixels of 10 px type, or the last (the shortest) if none does.
const fitText = (texts, width) => texts.find((s) => s.length * 6 <= width) ?? texts[texts.length - 1];

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

// One format for every tick of an axis: learning rates (all below 0.01) all in exponent form, not "0,001"
// next to "9,0×10⁻⁴".
function tickFormat(ticks) {
  const big = Math.max(...ticks.map(Math.abs));
  if (big !== 0 && (big < 1e-2 || big >= 1e5)) return (v) => (v === 0 ? "0" : sci(v, 1));
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
  // The left margin fits the longest tick label ("8,0×10⁻⁴" needs more room than "4").
  m.l = Math.max(40, 10 + 6.2 * Math.max(...ys.map((v) => yFmt(v).length)));
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
        svgEl("title", {}, dot).textContent = `${t("step")} ${num(p[0])}: ${fmt(p[1])}`;
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
    status.textContent = t("log_status", num(recs.length), data.log_path, new Date().toLocaleTimeString(t("locale")));
  }
  // The trainer (minillm/machinery/run.py; the format is machinery/runlog.py) writes "train" records {loss, lr,
  // ...} every --log-every steps and "eval" records {nll, perplexity, accuracy, bleu, chrf, ...}. The validation
  // curve uses nll (mean cross-entropy per token, nats): the training loss may include label smoothing, nll never
  // does, so they differ by that much.
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
  drawLineChart($("chart-lr"), t("chart_lr"), [S(t("lr"), "train", ["lr"], COLORS[0])]);
  $("charts").dataset.state = "drawn";

  // The run's "info" record (written once at step 0): where and how it trains.
  const info = recs.find((r) => r.kind === "info");
  $("run-info").textContent = info
    ? t("run_info", info.device, info.precision, num(info.train_pairs), num(info.val_pairs), info.world_size) : "";
}

async function loadMetrics() {
  if (document.hidden) return;  // no polling from a background tab
  try {
    const response = await fetch("/api/metrics");
    const data = await response.json();
    if (!response.ok) throw new Error(explainServerError(response.status, data.error));
    if (data.version === state.metricsVersion && state.metrics) return;  // nothing new since the last poll
    state.metricsVersion = data.version;
    state.metrics = data;
    renderMetrics(data);
  } catch (err) {
    $("metrics-status").textContent = t("metrics_failed", err.message);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The model panel, and start-up
// ---------------------------------------------------------------------------------------------------------------

// A ModelConfig value as shown: numbers in the page's language, "GELU", "evet", "yok".
const CONFIG_NAMES = { gelu: "GELU", swiglu: "SwiGLU", layernorm: "LayerNorm", rmsnorm: "RMSNorm", rope: "RoPE" };
function showConfigValue(key, value) {
  if (typeof value === "number") return key.endsWith("_id") || key === "checkpoint" ? String(value) : fmt(value);
  if (typeof value === "string" && key !== "checkpoint") {
    return CONFIG_NAMES[value] ?? I18N[state.lang].config_values[value] ?? value;
  }
  if (value !== null && typeof value === "object") return JSON.stringify(value);
  return typeof value === "string" ? value : showValue(value);
}

function renderInfo(info) {
  $("param-count").textContent = t("params", num(info.num_params));
  // Whether the model reads passages after the question, how many, and from how large a corpus (/api/info's
  // retrieval: null for a model without; absent from a server that predates retrieval).
  const r = info.retrieval;
  $("retrieval-info").textContent = r ? t("retrieval_on", num(r.articles), num(r.pairs), num(r.article_passages),
    num(r.training_answers)) : r === null ? t("retrieval_off") : "";
  const table = $("config-table");
  clear(table);
  const rows = Object.entries(info.model_config).concat([["checkpoint", info.checkpoint]]);
  for (const [key, value] of rows) {
    const tr = table.insertRow();
    const name = tr.insertCell();
    name.textContent = I18N[state.lang].config[key] ?? key;
    name.title = key;  // the field's name in ModelConfig (minillm/transformer.py)
    tr.insertCell().textContent = showConfigValue(key, value);
  }
}

async function loadInfo() {
  const response = await fetch("/api/info");
  const info = await response.json();
  if (!response.ok) throw new Error(explainServerError(response.status, info.error));
  state.info = info;
  renderInfo(info);
  // The controls' limits and defaults are the server's (minillm.decoding.SETTINGS with the server's caps): the
  // page states no bound of its own. An exclusive lower bound (top_p > 0) has no HTML form; the label shows it.
  for (const [name, range] of Object.entries(info.ranges)) {
    const input = $(name);
    if (!input) continue;
    if (range.min_inclusive) input.min = range.min;
    else input.removeAttribute("min");
    if (range.max !== null) input.max = range.max;
    else input.removeAttribute("max");
  }
  for (const control of settingControls()) {
    const value = info.defaults[control.id];
    if (value !== undefined) control.value = value === null ? "" : String(value);
  }
  $("question").maxLength = info.limits.max_question_chars;
  showRanges();
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
  $("attention-kind").addEventListener("change", drawHeatmap);
  window.addEventListener("resize", () => { drawHeatmap(); if (state.metrics) renderMetrics(state.metrics); });

  // /?q=...&strategy=beam&num_beams=3&lang=en: check the URL against /api/info, fill the controls, then ask.
  const params = new URLSearchParams(window.location.search);
  const lang = params.get("lang");
  if (lang === "en" || lang === "tr") state.lang = lang;
  applyLanguage();
  // The curves load at once, beside the model's info, and are drawn before any question is asked: started after
  // them and never awaited, they once lost the race to the answer, and the page looked done with a blank card.
  const metrics = loadMetrics();
  try {
    await loadInfo();
  } catch (err) {
    $("param-count").textContent = t("info_failed", err instanceof TypeError ? t("unreachable") : err.message);
  }
  const problems = applyUrlSettings(params);
  if (lang !== null && lang !== "en" && lang !== "tr") {
    problems.unshift(() => t("url_bad", "lang", t("language"), t("must_lang", lang)));
  }
  updateInactiveControls();
  await metrics;
  setInterval(loadMetrics, 5000);  // while a run goes, its curves grow
  if (params.has("q")) $("question").value = params.get("q");
  if (problems.length) {
    showMessage(problems.concat(params.get("q") ? [() => t("url_not_asked")] : []));
  } else if (params.get("q")) {
    await ask();
  }
}

document.addEventListener("DOMContentLoaded", start);
