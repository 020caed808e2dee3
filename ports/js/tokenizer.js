// BERT's WordPiece tokenizer in plain JavaScript, reading a checkpoint's vocab.txt: a port of
// what tinydact/tokenizer.py assembles from the `tokenizers` library (BertNormalizer,
// BertPreTokenizer, WordPiece, the [CLS] A [SEP] B [SEP] template), giving the same ids.
//
//   special tokens  [PAD] [UNK] [CLS] [SEP] [MASK] typed in a text are those tokens (matched
//                   exactly, before anything else)
//   normalize       drop NUL, U+FFFD and control/format/private-use characters; whitespace
//                   -> " "; spaces around CJK ideographs; strip accents (NFD, then drop the
//                   nonspacing marks); lower-case, one character at a time
//   pre-tokenize    split on whitespace, and isolate every punctuation character
//   WordPiece       greedy longest match from the left, "##" before non-initial pieces; a word
//                   longer than 100 characters or with no match becomes [UNK]
//   post-process    [CLS] A [SEP] (token types 0), [CLS] A [SEP] B [SEP] (B's types 1),
//                   truncated to max_length by dropping pieces from the end ("longest first")

import { TinydactError, repr } from "./errors.js";

const SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const MAX_WORD_CHARS = 100;

const CONTROL = /[\p{Cc}\p{Cf}\p{Co}\p{Cs}]/u; // not Cn: unassigned characters are kept, as in `tokenizers`
const WHITESPACE = /\p{White_Space}/u; // Unicode White_Space (JavaScript's \s also matches U+FEFF)
const PUNCTUATION = /[\p{P}!-\/:-@\[-`{-~]/u; // Unicode P*, and all ASCII punctuation ($ + < = > ^ ` | ~ are symbols)
const MARK = /\p{Mn}/gu; // nonspacing marks: the accents NFD splits off

/** The CJK Unified Ideographs blocks (not Japanese kana or Hangul), as in BERT. */
function isCJK(c) {
  return (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) || (c >= 0x20000 && c <= 0x2a6df) ||
    (c >= 0x2a700 && c <= 0x2b73f) || (c >= 0x2b740 && c <= 0x2b81f) || (c >= 0x2b820 && c <= 0x2ceaf) ||
    (c >= 0xf900 && c <= 0xfaff) || (c >= 0x2f800 && c <= 0x2fa1f);
}

/** The lines of vocab.txt (line i is token i), split as Python reads text files. */
export function readVocab(text) {
  const lines = text.split(/\r\n|\r|\n/);
  if (lines[lines.length - 1] === "") lines.pop(); // the newline that ends the file
  return lines;
}

/** The special tokens' ids a tokenizer_config.json records (`added_tokens_decoder`: id ->
 * {"content": token, ...}, as `transformers` writes it; none in older files) must be their
 * lines in vocab.txt: a line added or removed above [CLS] moves it, and every id with it
 * (tinydact/tokenizer.py's check_special_ids). `source`, `vocabFile`: the files, as messages
 * name them. */
function checkSpecialIds(vocab, recorded, source, vocabFile) {
  if (typeof recorded !== "object" || recorded === null || Array.isArray(recorded)) {
    throw new TinydactError(`${source}: added_tokens_decoder must be an object of id -> token`);
  }
  for (const [i, entry] of Object.entries(recorded)) {
    const token = typeof entry === "object" && entry !== null ? entry.content : undefined;
    if (!/^[0-9]+$/.test(i) || typeof token !== "string") {
      throw new TinydactError(`${source}: added_tokens_decoder[${repr(i)}] is not an id with a token`);
    }
    if (Number(i) >= vocab.length || vocab[Number(i)] !== token) {
      const where = vocab.includes(token) ? `is token ${vocab.indexOf(token)}` : "is missing";
      throw new TinydactError(`${vocabFile}: ${token} ${where}, tokenizer_config.json records it as token ${i} ` +
        "(lines of vocab.txt added, removed or moved: every id after them changes)");
    }
  }
}

export class Tokenizer {
  /** vocab: the tokens in id order. Options as in tokenizer_config.json; stripAccents null
   * follows lowercase (uncased models also drop accents). */
  constructor(vocab, { lowercase = true, stripAccents = null, chineseChars = true, maxLength = 512 } = {}) {
    this.vocab = vocab;
    this.ids = new Map(vocab.map((token, i) => [token, i]));
    for (const t of SPECIALS.slice(0, 4)) if (!this.ids.has(t)) throw new TinydactError(`vocab.txt lacks the special token ${t}`);
    this.lowercase = lowercase;
    this.stripAccents = stripAccents ?? lowercase;
    this.chineseChars = chineseChars;
    this.maxLength = maxLength;
    const specials = SPECIALS.filter((t) => this.ids.has(t)).map((t) => t.replace(/[\[\]]/g, "\\$&"));
    this.specialPattern = new RegExp(`(${specials.join("|")})`);
  }

  /** From the text of vocab.txt and the parsed tokenizer_config.json (optional), checked as
   * tinydact/tokenizer.py checks it; `source` and `vocabFile` name the files in messages. */
  static fromFiles(vocabText, config = {}, source = "tokenizer_config.json", vocabFile = "vocab.txt") {
    if (typeof config !== "object" || config === null || Array.isArray(config)) {
      throw new TinydactError(`tokenizer config does not hold a JSON object: ${source}`);
    }
    const limit = config.model_max_length;
    if (limit != null && !(typeof limit === "number" && limit >= 2)) {
      throw new TinydactError(`${source}: model_max_length must be a number >= 2, got ${repr(limit)}`);
    }
    for (const key of ["do_lower_case", "tokenize_chinese_chars"]) {
      if (typeof (config[key] ?? true) !== "boolean") throw new TinydactError(`${source}: ${key} must be true or false, got ${repr(config[key])}`);
    }
    const tokenizer = new Tokenizer(readVocab(vocabText), {
      lowercase: config.do_lower_case ?? true,
      stripAccents: config.strip_accents ?? null,
      chineseChars: config.tokenize_chinese_chars ?? true,
      // Hugging Face writes a huge number here when a model sets no limit; positions end at 512
      maxLength: Math.floor(Math.min(512, limit || 512)),
    });
    checkSpecialIds(tokenizer.vocab, "added_tokens_decoder" in config ? config.added_tokens_decoder : {}, source, vocabFile);
    return tokenizer;
  }

  /** A vocabulary must match the embedding it indexes: one line more or less in vocab.txt
   * shifts every id after it and changes the answers without a word (tokenizer.py's check_fits). */
  checkFits(vocabSize, padTokenId, source) {
    if (this.vocab.length !== vocabSize) {
      throw new TinydactError(`${source}: vocab.txt has ${this.vocab.length} tokens, the model's embedding ${vocabSize}`);
    }
    if (this.vocab.indexOf("[PAD]") !== padTokenId) {
      throw new TinydactError(`${source}: [PAD] is token ${this.vocab.indexOf("[PAD]")} in vocab.txt, the config says ${padTokenId}`);
    }
  }

  normalize(text) {
    let out = "";
    for (const ch of text) { // one code point at a time (emoji and CJK extension B are two UTF-16 units)
      const c = ch.codePointAt(0);
      if (c === 0 || c === 0xfffd || (CONTROL.test(ch) && !"\t\n\r".includes(ch))) continue;
      if (WHITESPACE.test(ch)) out += " ";
      else if (this.chineseChars && isCJK(c)) out += ` ${ch} `;
      else out += ch;
    }
    if (this.stripAccents) out = out.normalize("NFD").replace(MARK, "");
    // lower-case one character at a time: a whole-string toLowerCase would turn a final Σ into ς
    if (this.lowercase) out = Array.from(out, (ch) => ch.toLowerCase()).join("");
    return out;
  }

  /** Words: split on whitespace, each punctuation character a word of its own. */
  preTokenize(text) {
    const words = [];
    let word = "";
    for (const ch of text) {
      if (WHITESPACE.test(ch) || PUNCTUATION.test(ch)) {
        if (word) words.push(word);
        word = "";
        if (!WHITESPACE.test(ch)) words.push(ch);
      } else {
        word += ch;
      }
    }
    if (word) words.push(word);
    return words;
  }

  /** One word -> vocabulary pieces: the longest prefix in the vocabulary, then "##" + the
   * longest continuation, and so on; [UNK] for the whole word when a part has no match. */
  wordPiece(word) {
    const chars = Array.from(word);
    if (chars.length > MAX_WORD_CHARS) return ["[UNK]"];
    const pieces = [];
    for (let start = 0; start < chars.length; ) {
      let end = chars.length, piece = null;
      for (; end > start; end--) {
        const candidate = (start > 0 ? "##" : "") + chars.slice(start, end).join("");
        if (this.ids.has(candidate)) {
          piece = candidate;
          break;
        }
      }
      if (piece === null) return ["[UNK]"];
      pieces.push(piece);
      start = end;
    }
    return pieces;
  }

  /** A text -> its pieces, special tokens typed in it kept whole. */
  tokenize(text) {
    const pieces = [];
    text.split(this.specialPattern).forEach((part, i) => {
      if (i % 2 === 1) pieces.push(part); // the split's captured separators: special tokens
      else for (const word of this.preTokenize(this.normalize(part))) pieces.push(...this.wordPiece(word));
    });
    return pieces;
  }

  /** Encode a text (and an optional second sentence) for the model, truncated to maxLength
   * tokens: { inputIds, tokenTypeIds, attentionMask, tokens, truncated }. */
  encode(text, pair = null, maxLength = this.maxLength) {
    let a = this.tokenize(text), b = pair === null ? null : this.tokenize(pair);
    const full = a.length + (b ? b.length : 0);
    const budget = maxLength - (b ? 3 : 2); // room left by [CLS] A [SEP] (B [SEP])
    if (budget < 1) throw new TinydactError(`max_length ${maxLength} leaves no room for text after ${b ? 3 : 2} special tokens`);
    if (!b) {
      a = a.slice(0, budget);
    } else if (a.length + b.length > budget) {
      // "longest first", as in `tokenizers`: the shorter sentence keeps what it has, up to half
      // the budget; on an odd budget split evenly the extra token goes to the second sentence
      let short = Math.min(a.length, b.length), long = Math.max(a.length, b.length);
      long = short > budget ? short : Math.max(short, budget - short);
      if (short + long > budget) {
        short = Math.floor(budget / 2);
        long = short + (budget % 2);
      }
      const [na, nb] = a.length > b.length ? [long, short] : [short, long];
      a = a.slice(0, na);
      b = b.slice(0, nb);
    }
    const tokens = ["[CLS]", ...a, "[SEP]", ...(b ? [...b, "[SEP]"] : [])];
    const tokenTypeIds = tokens.map((_, i) => (i < a.length + 2 ? 0 : 1));
    const inputIds = tokens.map((t) => this.ids.get(t));
    return { inputIds, tokenTypeIds, attentionMask: inputIds.map(() => 1), tokens, truncated: full > a.length + (b ? b.length : 0) };
  }
}
