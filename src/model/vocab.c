/* vocab.c - the token vocabulary: special-token ids derived from n_vocab,
 * the language list, token -> bytes, and bytes -> token for BPE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "model/model.h"

/* Whisper's languages in token order; the 100th ("yue") exists only in
 * large-v3 style vocabularies (n_vocab 51866). */
static const char *const LANGUAGES[SH_MAX_LANGUAGES][2] = {
    {"en", "english"}, {"zh", "chinese"}, {"de", "german"}, {"es", "spanish"},
    {"ru", "russian"}, {"ko", "korean"}, {"fr", "french"}, {"ja", "japanese"},
    {"pt", "portuguese"}, {"tr", "turkish"}, {"pl", "polish"}, {"ca", "catalan"},
    {"nl", "dutch"}, {"ar", "arabic"}, {"sv", "swedish"}, {"it", "italian"},
    {"id", "indonesian"}, {"hi", "hindi"}, {"fi", "finnish"}, {"vi", "vietnamese"},
    {"he", "hebrew"}, {"uk", "ukrainian"}, {"el", "greek"}, {"ms", "malay"},
    {"cs", "czech"}, {"ro", "romanian"}, {"da", "danish"}, {"hu", "hungarian"},
    {"ta", "tamil"}, {"no", "norwegian"}, {"th", "thai"}, {"ur", "urdu"},
    {"hr", "croatian"}, {"bg", "bulgarian"}, {"lt", "lithuanian"}, {"la", "latin"},
    {"mi", "maori"}, {"ml", "malayalam"}, {"cy", "welsh"}, {"sk", "slovak"},
    {"te", "telugu"}, {"fa", "persian"}, {"lv", "latvian"}, {"bn", "bengali"},
    {"sr", "serbian"}, {"az", "azerbaijani"}, {"sl", "slovenian"}, {"kn", "kannada"},
    {"et", "estonian"}, {"mk", "macedonian"}, {"br", "breton"}, {"eu", "basque"},
    {"is", "icelandic"}, {"hy", "armenian"}, {"ne", "nepali"}, {"mn", "mongolian"},
    {"bs", "bosnian"}, {"kk", "kazakh"}, {"sq", "albanian"}, {"sw", "swahili"},
    {"gl", "galician"}, {"mr", "marathi"}, {"pa", "punjabi"}, {"si", "sinhala"},
    {"km", "khmer"}, {"sn", "shona"}, {"yo", "yoruba"}, {"so", "somali"},
    {"af", "afrikaans"}, {"oc", "occitan"}, {"ka", "georgian"}, {"be", "belarusian"},
    {"tg", "tajik"}, {"sd", "sindhi"}, {"gu", "gujarati"}, {"am", "amharic"},
    {"yi", "yiddish"}, {"lo", "lao"}, {"uz", "uzbek"}, {"fo", "faroese"},
    {"ht", "haitian creole"}, {"ps", "pashto"}, {"tk", "turkmen"}, {"nn", "nynorsk"},
    {"mt", "maltese"}, {"sa", "sanskrit"}, {"lb", "luxembourgish"}, {"my", "myanmar"},
    {"bo", "tibetan"}, {"tl", "tagalog"}, {"mg", "malagasy"}, {"as", "assamese"},
    {"tt", "tatar"}, {"haw", "hawaiian"}, {"ln", "lingala"}, {"ha", "hausa"},
    {"ba", "bashkir"}, {"jw", "javanese"}, {"su", "sundanese"}, {"yue", "cantonese"},
};

const char *sh_language_code(int i) {
    return (i >= 0 && i < SH_MAX_LANGUAGES) ? LANGUAGES[i][0] : NULL;
}

const char *sh_language_name(int i) {
    return (i >= 0 && i < SH_MAX_LANGUAGES) ? LANGUAGES[i][1] : NULL;
}

/* The text vocabulary ends at eot (50256 for English-only, 50257 for
 * multilingual); the specials follow in a fixed order. English-only
 * vocabularies keep the 99 language slots, unused, so their timestamps
 * start at 50363. */
void sh_special_from_n_vocab(sh_special *sp, int n_vocab) {
    int multilingual = n_vocab >= 51865;
    int language_slots = n_vocab == 51866 ? 100 : 99;
    sp->n_languages = multilingual ? language_slots : 0;
    sp->eot = multilingual ? 50257 : 50256;
    sp->sot = sp->eot + 1;
    sp->first_language = sp->sot + 1;
    sp->translate = sp->first_language + language_slots;
    sp->transcribe = sp->translate + 1;
    sp->sot_lm = sp->transcribe + 1;
    sp->sot_prev = sp->sot_lm + 1;
    sp->no_speech = sp->sot_prev + 1;
    sp->no_timestamps = sp->no_speech + 1;
    sp->timestamp_begin = sp->no_timestamps + 1;
}

/* Names of the specials, as tiktoken decodes them. */
static int special_text(const shruti_model *m, int t, char *out, size_t size) {
    const sh_special *sp = &m->sp;
    const char *name = NULL;
    if (t == sp->eot) name = "endoftext";
    else if (t == sp->sot) name = "startoftranscript";
    else if (t >= sp->first_language && t < sp->translate)
        name = LANGUAGES[t - sp->first_language][0];
    else if (t == sp->translate) name = "translate";
    else if (t == sp->transcribe) name = "transcribe";
    else if (t == sp->sot_lm) name = "startoflm";
    else if (t == sp->sot_prev) name = "startofprev";
    else if (t == sp->no_speech) name = "nospeech";
    else if (t == sp->no_timestamps) name = "notimestamps";
    if (name) return snprintf(out, size, "<|%s|>", name);
    if (t >= sp->timestamp_begin && t < m->hp.n_vocab)
        return snprintf(out, size, "<|%.2f|>", (t - sp->timestamp_begin) * 0.02);
    return -1;
}

const char *sh_token_bytes(const shruti_model *m, int t, size_t *len, char *scratch,
                           size_t scratch_size) {
    const sh_vocab *v = &m->vocab;
    if (t < 0 || t >= m->hp.n_vocab) return NULL;
    if (t < v->n_tokens && t < m->sp.eot) {
        *len = v->offset[t + 1] - v->offset[t];
        return v->bytes + v->offset[t];
    }
    int n = special_text(m, t, scratch, scratch_size);
    if (n < 0) { /* a text id the file did not store */
        *len = 0;
        return "";
    }
    *len = (size_t)n;
    return scratch;
}

/* FNV-1a: a simple, well-distributed hash for short byte strings. */
static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* The byte of each of the first 256 tokens, in GPT-2's byte-level order:
 * the printable bytes '!'..'~', 0xA1..0xAC, 0xAE..0xFF, then the other 68
 * in increasing order. */
static int byte_of_token(int id) {
    if (id < 94) return 0x21 + id;
    if (id < 106) return 0xA1 + (id - 94);
    if (id < 188) return 0xAE + (id - 106);
    int k = id - 188;   /* 0x00..0x20, 0x7F..0xA0, 0xAD */
    if (k < 33) return k;
    if (k < 67) return 0x7F + (k - 33);
    return 0xAD;
}

/* Some published ggml files store the byte tokens that are not valid
 * UTF-8 on their own as U+FFFD; the first 256 tokens are always the 256
 * single bytes, so those are restored here. Returns the number repaired,
 * or a negative status. */
int sh_vocab_repair_byte_tokens(sh_vocab *v) {
    int n_bad = 0;
    for (int t = 0; t < 256 && t < v->n_tokens; t++) {
        size_t len = v->offset[t + 1] - v->offset[t];
        n_bad += !(len == 1 && (uint8_t)v->bytes[v->offset[t]] == byte_of_token(t));
    }
    if (n_bad == 0 || v->n_tokens < 256) return 0;
    size_t old_total = v->offset[v->n_tokens], rest = old_total - v->offset[256];
    char *bytes = malloc(256 + rest + 1);
    if (!bytes) return SHRUTI_ERR_NOMEM;
    for (int t = 0; t < 256; t++) bytes[t] = (char)byte_of_token(t);
    memcpy(bytes + 256, v->bytes + v->offset[256], rest);
    uint32_t shift = v->offset[256];
    for (int t = 0; t <= 256; t++) v->offset[t] = (uint32_t)t;
    for (int t = 257; t <= v->n_tokens; t++) v->offset[t] = v->offset[t] - shift + 256;
    free(v->bytes);
    v->bytes = bytes;
    return n_bad;
}

int sh_vocab_build_index(sh_vocab *v) {
    uint32_t size = 1;
    while (size < (uint32_t)v->n_tokens * 2u + 2u) size <<= 1;
    v->table = malloc(size * sizeof *v->table);
    if (!v->table) return SHRUTI_ERR_NOMEM;
    memset(v->table, 0xff, size * sizeof *v->table);   /* -1 = empty */
    v->table_mask = size - 1;
    for (int t = 0; t < v->n_tokens; t++) {
        size_t len = v->offset[t + 1] - v->offset[t];
        if (len == 0) continue;
        /* The first id wins when two entries share bytes, as in tiktoken. */
        if (sh_vocab_lookup(v, v->bytes + v->offset[t], len) >= 0) continue;
        uint32_t h = hash_bytes(v->bytes + v->offset[t], len) & v->table_mask;
        while (v->table[h] >= 0) h = (h + 1) & v->table_mask;
        v->table[h] = t;
    }
    return 0;
}

int sh_vocab_lookup(const sh_vocab *v, const char *bytes, size_t len) {
    uint32_t h = hash_bytes(bytes, len) & v->table_mask;
    for (;;) {
        int32_t t = v->table[h];
        if (t < 0) return -1;
        size_t tl = v->offset[t + 1] - v->offset[t];
        if (tl == len && memcmp(v->bytes + v->offset[t], bytes, len) == 0) return t;
        h = (h + 1) & v->table_mask;
    }
}

void sh_vocab_free(sh_vocab *v) {
    free(v->offset);
    free(v->bytes);
    free(v->table);
    memset(v, 0, sizeof *v);
}

/* ------------------------------------------------------------ public API */

int shruti_model_n_languages(const shruti_model *m) { return m->sp.n_languages; }

const char *shruti_language_code(const shruti_model *m, int i) {
    return (i >= 0 && i < m->sp.n_languages) ? LANGUAGES[i][0] : NULL;
}

int shruti_language_index(const shruti_model *m, const char *s) {
    int n = m->sp.n_languages ? m->sp.n_languages : 1;   /* English-only: "en" */
    for (int i = 0; s && i < n; i++)
        if (strcasecmp(s, LANGUAGES[i][0]) == 0 || strcasecmp(s, LANGUAGES[i][1]) == 0)
            return i;
    return -1;
}

const char *shruti_token_text(const shruti_model *m, int token, size_t *len) {
    static const char empty[] = "";   /* specials have no bytes of their own */
    size_t n = 0;
    if (token < 0 || token >= m->hp.n_vocab) return NULL;
    if (token < m->vocab.n_tokens && token < m->sp.eot) {
        n = m->vocab.offset[token + 1] - m->vocab.offset[token];
        if (len) *len = n;
        return m->vocab.bytes + m->vocab.offset[token];
    }
    if (len) *len = 0;
    return empty;
}
