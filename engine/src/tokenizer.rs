//! Tokenization from a GGUF file's metadata, byte-level BPE and SentencePiece, giving
//! llama.cpp's token ids.
//!
//! [`Tokenizer::from_metadata`] reads `tokenizer.ggml.*`: the vocabulary, token types, merges,
//! the special ids and the `add_bos_token`/`add_eos_token` flags, and the pre-tokenizer named by
//! `tokenizer.ggml.pre`. Encoding follows llama.cpp's order of operations:
//!
//! 1. **Special tokens.** User-defined tokens are always recognised in the text; control tokens
//!    (`<|im_start|>`) only with `parse_special`. Longer tokens are matched first.
//! 2. **UTF-8.** The text is read as llama.cpp reads it: a lead byte with the right number of
//!    continuation bytes is one character (overlong forms included); any other byte becomes
//!    U+FFFD. [`InvalidUtf8::Bytes`] instead keeps such bytes as they are, so that every byte
//!    string round-trips.
//! 3. **Pre-tokenization.** The pre-tokenizer's split expressions are applied in turn, each
//!    splitting every piece of the previous one into its matches and the text between them.
//!    GPT-2's `\s+(?!\S)` (a lookahead the `regex` crate lacks) is emulated: a run of spaces
//!    followed by a non-space gives up its last space to the next piece.
//! 4. **BPE.** Each piece's bytes start as one symbol per UTF-8 character of its byte-level
//!    (GPT-2 `bytes_to_unicode`) text and merge pairwise, lowest merge rank first and leftmost
//!    first among equals, as long as the merged text is a token. Symbols left that are not
//!    tokens are spelled with single-byte tokens.
//!
//! SentencePiece vocabularies (`tokenizer.ggml.model = llama`: Gemma, Llama 2, Mistral) take
//! the same special-token step; each piece of text between special tokens then gets a `▁`
//! prefix where `add_space_prefix` asks for it, has its spaces written `▁`, and is merged
//! symbol by symbol by token score (see `encode_spm`); characters without a token fall back to
//! `<0xXX>` byte tokens. llama.cpp splits the text by the length each lead byte announces,
//! unchecked, which [`InvalidUtf8::Replace`] (the default) reproduces; with
//! [`InvalidUtf8::Bytes`] a byte that starts no valid character stands alone, and every byte
//! string without U+2581 comes back from decoding.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use quant::gguf::Metadata;
use regex::Regex;

use crate::backend::Token;

/// Why a tokenizer could not be built from metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A required key is missing or has the wrong type.
    #[error("tokenizer metadata: {key}: {problem}")]
    Metadata {
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A tokenizer model this crate does not implement.
    #[error("tokenizer model {0:?} is not supported (byte-level BPE `gpt2` is)")]
    UnsupportedModel(String),
    /// A pre-tokenizer this crate does not implement.
    #[error(
        "pre-tokenizer {0:?} is not supported (default, gpt2, smollm, llama3/llama-bpe, qwen2 are)"
    )]
    UnsupportedPre(String),
    /// A merge rule that does not name two tokens.
    #[error("merge {index} ({rule:?}) is not two space-separated tokens")]
    BadMerge {
        /// Its index in `tokenizer.ggml.merges`.
        index: usize,
        /// The rule.
        rule: String,
    },
    /// A token id outside the vocabulary.
    #[error("token {token} is outside the vocabulary of {n_vocab}")]
    InvalidToken {
        /// The id.
        token: Token,
        /// Vocabulary size.
        n_vocab: usize,
    },
}

/// What a token is, from `tokenizer.ggml.token_type` (llama.cpp's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// Ordinary text (1).
    Normal,
    /// `<unk>` (2).
    Unknown,
    /// Control tokens such as `<|im_start|>` (3): matched in text only with `parse_special`.
    Control,
    /// User-defined tokens (4): always matched in text.
    UserDefined,
    /// Unused slots (5).
    Unused,
    /// SentencePiece byte tokens (6).
    Byte,
    /// Anything else.
    Undefined,
}

impl TokenType {
    fn from_id(id: i64) -> TokenType {
        match id {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

/// What to do with bytes that are not UTF-8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InvalidUtf8 {
    /// As llama.cpp: each such byte becomes U+FFFD (identical ids; not reversible).
    #[default]
    Replace,
    /// Keep the byte: it is spelled with its byte token, so that decoding gives the input back
    /// (every byte that has a token; see [`Tokenizer::byte_token`]).
    Bytes,
}

/// How one piece of text is split further.
#[derive(Debug)]
struct Split {
    /// Anchored at the start (`^(?:...)`).
    re: Regex,
    /// The expression ends in GPT-2's `\s+(?!\S)` (replaced by `\s+` here); with
    /// `then_plain_ws` the original also has a plain `\s+` after it (llama3, qwen2).
    lookahead_ws: bool,
    then_plain_ws: bool,
}

impl Split {
    fn plain(re: &str) -> Split {
        Split {
            re: Regex::new(&format!("^(?:{re})")).expect("valid built-in expression"),
            lookahead_ws: false,
            then_plain_ws: false,
        }
    }

    /// `re` ends with `\s+(?!\S)`, given here without it.
    fn with_ws(re: &str, then_plain_ws: bool) -> Split {
        Split {
            re: Regex::new(&format!(r"^(?:{re}|\s+)")).expect("valid built-in expression"),
            lookahead_ws: true,
            then_plain_ws,
        }
    }

    /// Splits `s` into the spans of its matches and of the text between them.
    fn split(&self, s: &str, out: &mut Vec<(usize, usize)>, base: usize) {
        let mut i = 0;
        let mut gap = None;
        while i < s.len() {
            let m = self.re.find(&s[i..]).map(|m| m.end());
            let len = match m {
                Some(len) if len > 0 => self.fix_ws(&s[i..], len),
                _ => None,
            };
            match len {
                Some(len) => {
                    if let Some(g) = gap.take() {
                        out.push((base + g, base + i));
                    }
                    out.push((base + i, base + i + len));
                    i += len;
                }
                None => {
                    gap.get_or_insert(i);
                    i += s[i..].chars().next().map_or(1, char::len_utf8);
                }
            }
        }
        if let Some(g) = gap {
            out.push((base + g, base + s.len()));
        }
    }

    /// The length `\s+(?!\S)` (and a following `\s+`) would give a whitespace-only match of
    /// `len` bytes at the start of `s`; `None` where the expression would not match here.
    fn fix_ws(&self, s: &str, len: usize) -> Option<usize> {
        let m = &s[..len];
        if !self.lookahead_ws || len == s.len() || !m.chars().all(char::is_whitespace) {
            return Some(len);
        }
        // Followed by a non-space (the run is greedy): the lookahead version backtracks one
        // character; a single character can only be taken by a plain `\s+`.
        let last = m.chars().next_back().map_or(1, char::len_utf8);
        if len > last {
            Some(len - last)
        } else if self.then_plain_ws {
            Some(len)
        } else {
            None
        }
    }
}

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+";

/// The split expressions llama.cpp uses for a `tokenizer.ggml.pre` value.
fn pre_tokenizer(pre: &str) -> Result<Vec<Split>, TokenizerError> {
    Ok(match pre {
        "default" => vec![
            Split::plain(r"[\p{P}\$\+<=>\^~\|]+"),
            Split::with_ws(GPT2, false),
            Split::plain(r"\p{N}+"),
            Split::plain("[0-9][0-9][0-9]"),
        ],
        "gpt-2" | "gpt2" => vec![Split::with_ws(GPT2, false)],
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" => {
            vec![Split::plain(r"\p{N}"), Split::with_ws(GPT2, false)]
        }
        "llama3" | "llama-v3" | "llama-bpe" => vec![Split::with_ws(LLAMA3, true)],
        "qwen2" => vec![Split::with_ws(QWEN2, true)],
        other => return Err(TokenizerError::UnsupportedPre(other.to_string())),
    })
}

/// GPT-2's `bytes_to_unicode`: the character each byte is written as in the vocabulary.
fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        out[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("below the surrogates")
        };
    }
    out
}

/// A byte-level BPE tokenizer read from GGUF metadata.
#[derive(Debug)]
pub struct Tokenizer {
    /// Each token's bytes (control tokens: their text).
    pieces: Vec<Vec<u8>>,
    types: Vec<TokenType>,
    /// Bytes → token, for normal and user-defined tokens.
    by_bytes: HashMap<Vec<u8>, Token>,
    /// (left, right) → (rank, merged token).
    merges: HashMap<(Token, Token), (u32, Token)>,
    /// The token of each single byte, where the vocabulary has one.
    byte_token: [Option<Token>; 256],
    /// Special tokens recognised in text, longest first.
    specials: Vec<(Vec<u8>, Token, TokenType)>,
    splits: Vec<Split>,
    /// Emit a whole piece as one token when it is one (llama.cpp's `ignore_merges`).
    ignore_merges: bool,
    bos: Option<Token>,
    eos: Option<Token>,
    add_bos: bool,
    add_eos: bool,
    /// SentencePiece vocabularies (`tokenizer.ggml.model = llama`); `None` for byte-level BPE.
    spm: Option<Spm>,
}

/// What SentencePiece tokenization needs beyond the shared tables.
#[derive(Debug)]
struct Spm {
    /// Each token's score: the higher, the earlier a pair merges into it.
    scores: Vec<f32>,
    /// Token text (spaces written `▁`) → id, every token as llama.cpp's `text_to_token`.
    by_text: HashMap<Vec<u8>, Token>,
    /// Prepend a space to text at the start and after a special token.
    add_space_prefix: bool,
}

/// SentencePiece's visible space, U+2581.
const SPM_SPACE: &[u8] = "\u{2581}".as_bytes();

/// Each token's type (`tokenizer.ggml.token_type`; all normal when absent).
fn token_types(md: &Metadata, n: usize) -> Result<Vec<TokenType>, TokenizerError> {
    match md.get_array("tokenizer.ggml.token_type") {
        Ok((_, values)) if values.len() == n => Ok(values
            .iter()
            .map(|v| TokenType::from_id(v.as_i64().unwrap_or(0)))
            .collect()),
        Ok((_, values)) => Err(meta_err(
            "tokenizer.ggml.token_type",
            format!("{} entries for {n} tokens", values.len()),
        )),
        Err(_) => Ok(vec![TokenType::Normal; n]),
    }
}

/// An optional token id key (`tokenizer.ggml.bos_token_id`, ...), checked against `n`.
fn token_id(md: &Metadata, key: &str, n: usize) -> Result<Option<Token>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(t) if (t as usize) < n => Ok(Some(t as Token)),
            _ => Err(meta_err(key, format!("not a token id below {n}"))),
        },
    }
}

/// Special tokens are matched longest first (lower id first among equals), as llama.cpp does.
fn sort_specials(specials: &mut [(Vec<u8>, Token, TokenType)]) {
    specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
}

fn meta_err(key: &str, problem: impl Into<String>) -> TokenizerError {
    TokenizerError::Metadata {
        key: key.to_string(),
        problem: problem.into(),
    }
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file's metadata describes.
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let model = md
            .get_str("tokenizer.ggml.model")
            .map_err(|e| meta_err("tokenizer.ggml.model", e.to_string()))?;
        match model {
            "gpt2" => {}
            "llama" => return Self::spm_from_metadata(md),
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        }
        let pre = md.get_str("tokenizer.ggml.pre").unwrap_or("default");
        let splits = pre_tokenizer(pre)?;
        let ignore_merges = matches!(pre, "llama3" | "llama-v3" | "llama-bpe");

        let strings = |key: &str| -> Result<Vec<&str>, TokenizerError> {
            let (_, values) = md
                .get_array(key)
                .map_err(|e| meta_err(key, e.to_string()))?;
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .ok_or_else(|| meta_err(key, format!("entry {i} is not a string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let types = token_types(md, n)?;

        // Byte-level text back to bytes: every character stands for one byte.
        let chars = byte_chars();
        let mut char_byte: HashMap<char, u8> = HashMap::with_capacity(256);
        for (b, &c) in chars.iter().enumerate() {
            char_byte.insert(c, b as u8);
        }
        let decode = |s: &str| -> Option<Vec<u8>> {
            s.chars().map(|c| char_byte.get(&c).copied()).collect()
        };

        let mut pieces = Vec::with_capacity(n);
        let mut by_bytes = HashMap::with_capacity(n);
        let mut by_text: HashMap<&str, Token> = HashMap::with_capacity(n);
        let mut specials = Vec::new();
        for (id, (&text, &ty)) in tokens.iter().zip(&types).enumerate() {
            let id = id as Token;
            by_text.entry(text).or_insert(id);
            let bytes = match ty {
                TokenType::Control | TokenType::UserDefined | TokenType::Unknown => {
                    if !text.is_empty() {
                        specials.push((text.as_bytes().to_vec(), id, ty));
                    }
                    text.as_bytes().to_vec()
                }
                _ => decode(text).unwrap_or_else(|| text.as_bytes().to_vec()),
            };
            if matches!(
                ty,
                TokenType::Normal | TokenType::UserDefined | TokenType::Undefined
            ) {
                by_bytes.entry(bytes.clone()).or_insert(id);
            }
            pieces.push(bytes);
        }
        sort_specials(&mut specials);

        let mut byte_token = [None; 256];
        for (b, slot) in byte_token.iter_mut().enumerate() {
            *slot = by_bytes.get(&vec![b as u8]).copied();
        }

        let mut merges = HashMap::new();
        if let Ok((_, rules)) = md.get_array("tokenizer.ggml.merges") {
            for (rank, rule) in rules.iter().enumerate() {
                let rule = rule.as_str().ok_or_else(|| {
                    meta_err(
                        "tokenizer.ggml.merges",
                        format!("entry {rank} is not a string"),
                    )
                })?;
                let bad = || TokenizerError::BadMerge {
                    index: rank,
                    rule: rule.to_string(),
                };
                let (l, r) = rule.split_once(' ').ok_or_else(bad)?;
                let (Some(&lt), Some(&rt)) = (by_text.get(l), by_text.get(r)) else {
                    continue; // llama.cpp skips merges of unknown tokens too
                };
                let merged = format!("{l}{r}");
                if let Some(&mt) = by_text.get(merged.as_str()) {
                    merges.entry((lt, rt)).or_insert((rank as u32, mt));
                }
            }
        }

        let id = |key: &str| token_id(md, key, n);
        let flag = |key: &str| md.get(key).and_then(|v| v.as_bool());
        Ok(Tokenizer {
            pieces,
            types,
            by_bytes,
            merges,
            byte_token,
            specials,
            splits,
            ignore_merges,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            add_bos: flag("tokenizer.ggml.add_bos_token")
                .unwrap_or(matches!(pre, "llama3" | "llama-v3" | "llama-bpe")),
            add_eos: flag("tokenizer.ggml.add_eos_token").unwrap_or(false),
            spm: None,
        })
    }

    /// A SentencePiece vocabulary: tokens, scores and types; spaces are `▁` in token text,
    /// byte-fallback tokens are spelled `<0xXX>`.
    fn spm_from_metadata(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let list = |key: &str| {
            md.get_array(key)
                .map(|(_, v)| v)
                .map_err(|e| meta_err(key, e.to_string()))
        };
        let tokens = list("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let scores: Vec<f32> = match md.get_array("tokenizer.ggml.scores") {
            Ok((_, v)) if v.len() == n => v
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    x.as_f64().map(|f| f as f32).ok_or_else(|| {
                        meta_err(
                            "tokenizer.ggml.scores",
                            format!("entry {i} is not a number"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Ok((_, v)) => {
                return Err(meta_err(
                    "tokenizer.ggml.scores",
                    format!("{} entries for {n} tokens", v.len()),
                ))
            }
            Err(_) => vec![0.0; n],
        };
        let types = token_types(md, n)?;
        let mut pieces = Vec::with_capacity(n);
        let mut by_text = HashMap::with_capacity(n);
        let mut specials = Vec::new();
        let mut byte_token = [None; 256];
        for (id, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
            let id = id as Token;
            let text = t.as_str().ok_or_else(|| {
                meta_err(
                    "tokenizer.ggml.tokens",
                    format!("entry {id} is not a string"),
                )
            })?;
            by_text.entry(text.as_bytes().to_vec()).or_insert(id);
            let bytes = match ty {
                TokenType::Normal => text.replace('\u{2581}', " ").into_bytes(),
                TokenType::Byte => match spm_byte(text) {
                    Some(b) => {
                        byte_token[b as usize].get_or_insert(id);
                        vec![b]
                    }
                    None => text.as_bytes().to_vec(),
                },
                TokenType::Control | TokenType::UserDefined | TokenType::Unknown => {
                    if !text.is_empty() {
                        specials.push((text.as_bytes().to_vec(), id, ty));
                    }
                    text.as_bytes().to_vec()
                }
                _ => text.as_bytes().to_vec(),
            };
            pieces.push(bytes);
        }
        sort_specials(&mut specials);
        let id = |key: &str| token_id(md, key, n);
        let flag = |key: &str| md.get(key).and_then(|v| v.as_bool());
        Ok(Tokenizer {
            pieces,
            types,
            by_bytes: HashMap::new(),
            merges: HashMap::new(),
            byte_token,
            specials,
            splits: Vec::new(),
            ignore_merges: false,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            add_bos: flag("tokenizer.ggml.add_bos_token").unwrap_or(true),
            add_eos: flag("tokenizer.ggml.add_eos_token").unwrap_or(false),
            spm: Some(Spm {
                scores,
                by_text,
                add_space_prefix: flag("tokenizer.ggml.add_space_prefix").unwrap_or(true),
            }),
        })
    }

    /// Whether this is a SentencePiece vocabulary.
    pub fn is_sentencepiece(&self) -> bool {
        self.spm.is_some()
    }

    /// Number of tokens.
    pub fn n_vocab(&self) -> usize {
        self.pieces.len()
    }

    /// The token that spells byte `b` alone. Byte-level vocabularies usually have all 256;
    /// some (SmolLM2's) lack bytes that never occur in UTF-8 text and a few control
    /// characters, and such bytes are dropped when encoding, as llama.cpp drops them.
    pub fn byte_token(&self, b: u8) -> Option<Token> {
        self.byte_token[b as usize]
    }

    /// The BOS token, if the vocabulary names one.
    pub fn bos(&self) -> Option<Token> {
        self.bos
    }

    /// Whether encoding with `add_special` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// The EOS token, if the vocabulary names one.
    pub fn eos(&self) -> Option<Token> {
        self.eos
    }

    /// A token's type.
    pub fn token_type(&self, token: Token) -> Result<TokenType, TokenizerError> {
        self.types
            .get(token as usize)
            .copied()
            .ok_or(TokenizerError::InvalidToken {
                token,
                n_vocab: self.pieces.len(),
            })
    }

    /// Token ids of `text` as llama.cpp gives them: `add_special` adds BOS/EOS as the
    /// metadata asks, `parse_special` recognises control-token text.
    pub fn encode(&self, text: &[u8], add_special: bool, parse_special: bool) -> Vec<Token> {
        self.encode_with(text, add_special, parse_special, InvalidUtf8::Replace)
    }

    /// [`Self::encode`] with a choice of what happens to bytes that are not UTF-8.
    pub fn encode_with(
        &self,
        text: &[u8],
        add_special: bool,
        parse_special: bool,
        invalid: InvalidUtf8,
    ) -> Vec<Token> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        // SentencePiece prefixes a space to text at the start and after special tokens.
        let mut after_special = true;
        for fragment in self.partition(text, parse_special) {
            match (fragment, &self.spm) {
                (Fragment::Token(t), _) => {
                    out.push(t);
                    after_special = true;
                }
                (Fragment::Text(s), Some(spm)) => {
                    let prefix = after_special && spm.add_space_prefix;
                    self.encode_spm(spm, s, prefix, invalid, &mut out);
                    after_special = false;
                }
                (Fragment::Text(s), None) => self.encode_text(s, invalid, &mut out),
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// The text split around special tokens, longest tokens first.
    fn partition<'t>(&self, text: &'t [u8], parse_special: bool) -> Vec<Fragment<'t>> {
        let mut frags = vec![Fragment::Text(text)];
        for (bytes, id, ty) in &self.specials {
            if !parse_special && matches!(ty, TokenType::Control | TokenType::Unknown) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                let Fragment::Text(mut s) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = find(s, bytes) {
                    if at > 0 {
                        next.push(Fragment::Text(&s[..at]));
                    }
                    next.push(Fragment::Token(*id));
                    s = &s[at + bytes.len()..];
                }
                if !s.is_empty() {
                    next.push(Fragment::Text(s));
                }
            }
            frags = next;
        }
        frags
    }

    fn encode_text(&self, text: &[u8], invalid: InvalidUtf8, out: &mut Vec<Token>) {
        // Characters for the split expressions, and the bytes each stands for.
        let mut s = String::with_capacity(text.len());
        let mut units: Vec<(usize, Vec<u8>)> = Vec::new(); // (offset in s, bytes)
        let mut i = 0;
        while i < text.len() {
            let (c, bytes, used) = match utf8_char(&text[i..]) {
                // llama.cpp re-encodes the code point it read, which turns an overlong form
                // into the shortest one; kept as is when only the input's bytes round-trip.
                Some((c, used, cp)) => match invalid {
                    InvalidUtf8::Replace => (
                        c,
                        encode_cp(cp).unwrap_or_else(|| text[i..i + used].to_vec()),
                        used,
                    ),
                    InvalidUtf8::Bytes => (c, text[i..i + used].to_vec(), used),
                },
                None => {
                    let bytes = match invalid {
                        InvalidUtf8::Replace => "\u{FFFD}".as_bytes().to_vec(),
                        InvalidUtf8::Bytes => vec![text[i]],
                    };
                    ('\u{FFFD}', bytes, 1)
                }
            };
            units.push((s.len(), bytes));
            s.push(c);
            i += used;
        }
        let mut spans = vec![(0, s.len())];
        for split in &self.splits {
            let mut next = Vec::with_capacity(spans.len() * 2);
            for &(a, b) in &spans {
                split.split(&s[a..b], &mut next, a);
            }
            spans = next;
        }
        let mut word = Vec::new();
        for (a, b) in spans {
            word.clear();
            let first = units.partition_point(|u| u.0 < a);
            for u in units[first..].iter().take_while(|u| u.0 < b) {
                word.extend_from_slice(&u.1);
            }
            self.bpe(&word, out);
        }
    }

    /// Byte-pair encoding of one piece.
    fn bpe(&self, word: &[u8], out: &mut Vec<Token>) {
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            if let Some(&t) = self.by_bytes.get(word) {
                out.push(t);
                return;
            }
        }
        // Symbols: one per UTF-8 character of the byte-level text, i.e. one per byte.
        struct Sym {
            start: usize,
            len: usize,
            token: Option<Token>,
            prev: usize,
            next: usize,
        }
        const NONE: usize = usize::MAX;
        let n = word.len();
        let mut syms: Vec<Sym> = (0..n)
            .map(|i| Sym {
                start: i,
                len: 1,
                token: self.byte_token[word[i] as usize],
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            })
            .collect();
        // (rank, left position, left len, right len) → merged token.
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: usize, r: usize| {
            if let (Some(lt), Some(rt)) = (syms[l].token, syms[r].token) {
                if let Some(&(rank, merged)) = self.merges.get(&(lt, rt)) {
                    heap.push(Reverse((
                        rank,
                        syms[l].start,
                        syms[l].len,
                        syms[r].len,
                        l,
                        r,
                        merged,
                    )));
                }
            }
        };
        for i in 1..n {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(Reverse((_, _, llen, rlen, l, r, merged))) = heap.pop() {
            // Stale: one side has merged since this pair was queued.
            if syms[l].len != llen || syms[r].len != rlen || syms[l].next != r {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[l].token = Some(merged);
            syms[r].len = 0;
            let rn = syms[r].next;
            syms[l].next = rn;
            if rn != NONE {
                syms[rn].prev = l;
            }
            if syms[l].prev != NONE {
                push(&mut heap, &syms, syms[l].prev, l);
            }
            if rn != NONE {
                push(&mut heap, &syms, l, rn);
            }
        }
        let mut i = 0;
        while i != NONE {
            let s = &syms[i];
            match s.token {
                Some(t) => out.push(t),
                None => {
                    // Not in the vocabulary: spell it with byte tokens (none are missing in
                    // byte-level vocabularies; a byte without one is dropped, as in llama.cpp).
                    out.extend(
                        word[s.start..s.start + s.len]
                            .iter()
                            .filter_map(|&b| self.byte_token[b as usize]),
                    );
                }
            }
            i = s.next;
        }
    }

    /// SentencePiece encoding of one piece of text, as llama.cpp's SPM tokenizer does it:
    /// spaces become `▁`, the text splits into UTF-8 characters (by lead byte, unchecked),
    /// and adjacent symbols merge while their concatenation is a token, the pair whose
    /// token scores highest first (the leftmost among equals). A final symbol that is no
    /// token is spelled with `<0xXX>` byte tokens, so every byte string is encoded without
    /// loss.
    fn encode_spm(
        &self,
        spm: &Spm,
        text: &[u8],
        space_prefix: bool,
        invalid: InvalidUtf8,
        out: &mut Vec<Token>,
    ) {
        let mut t = Vec::with_capacity(text.len() + 8);
        if space_prefix {
            t.extend_from_slice(SPM_SPACE);
        }
        for &b in text {
            if b == b' ' {
                t.extend_from_slice(SPM_SPACE);
            } else {
                t.push(b);
            }
        }
        if t.is_empty() {
            return;
        }
        struct Sym {
            start: usize,
            len: usize,
            prev: usize,
            next: usize,
        }
        const NONE: usize = usize::MAX;
        let mut syms: Vec<Sym> = Vec::with_capacity(t.len());
        let mut at = 0;
        while at < t.len() {
            let len = match invalid {
                // llama.cpp's unicode_len_utf8: the length the lead byte announces, whatever
                // follows (an invalid lead can swallow the next character's bytes).
                InvalidUtf8::Replace => match t[at] >> 4 {
                    0xC | 0xD => 2,
                    0xE => 3,
                    0xF => 4,
                    _ => 1,
                }
                .min(t.len() - at),
                // Whole characters only; any other byte stands alone (and so round-trips).
                InvalidUtf8::Bytes => utf8_char(&t[at..]).map_or(1, |(_, used, _)| used),
            };
            let i = syms.len();
            syms.push(Sym {
                start: at,
                len,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if at + len == t.len() { NONE } else { i + 1 },
            });
            at += len;
        }
        // (score, leftmost first, left, right, merged length): a max-heap.
        #[derive(PartialEq)]
        struct Pair(f32, Reverse<usize>, usize, usize, usize);
        impl Eq for Pair {}
        impl PartialOrd for Pair {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Pair {
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
            }
        }
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<Pair>, syms: &[Sym], l: usize, r: usize| {
            if l == NONE || r == NONE {
                return;
            }
            let (a, n) = (syms[l].start, syms[l].len + syms[r].len);
            if let Some(&tok) = spm.by_text.get(&t[a..a + n]) {
                heap.push(Pair(spm.scores[tok as usize], Reverse(l), l, r, n));
            }
        };
        for i in 1..syms.len() {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(Pair(_, _, l, r, n)) = heap.pop() {
            // Stale: one side has merged since the pair was queued.
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != n {
                continue;
            }
            syms[l].len = n;
            syms[r].len = 0;
            let rn = syms[r].next;
            syms[l].next = rn;
            if rn != NONE {
                syms[rn].prev = l;
            }
            push(&mut heap, &syms, syms[l].prev, l);
            push(&mut heap, &syms, l, rn);
        }
        let mut i = 0;
        while i != NONE {
            let s = &syms[i];
            let piece = &t[s.start..s.start + s.len];
            match spm.by_text.get(piece) {
                Some(&tok) => out.push(tok),
                // A character the vocabulary lacks: its bytes (a byte without a token is
                // dropped; llama.cpp would fail).
                None => out.extend(piece.iter().filter_map(|&b| self.byte_token[b as usize])),
            }
            i = s.next;
        }
    }

    /// A token's bytes: its text for normal tokens; for control tokens their text only when
    /// `special` is set (llama.cpp's `token_to_piece`).
    pub fn piece(&self, token: Token, special: bool) -> Result<&[u8], TokenizerError> {
        let ty = self.token_type(token)?;
        Ok(match ty {
            TokenType::Control | TokenType::Unknown | TokenType::Unused if !special => &[],
            _ => &self.pieces[token as usize],
        })
    }

    /// The bytes of a token sequence (control tokens included as text when `special`).
    /// SentencePiece vocabularies that prefix a space drop one leading space from the first
    /// token, as llama.cpp's detokenizer does, so that decoding an encoding gives the text.
    pub fn decode(&self, tokens: &[Token], special: bool) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::new();
        for (i, &t) in tokens.iter().enumerate() {
            let p = self.piece(t, special)?;
            let strip = i == 0 && self.spm.as_ref().is_some_and(|s| s.add_space_prefix);
            out.extend_from_slice(match p {
                [b' ', rest @ ..] if strip => rest,
                _ => p,
            });
        }
        Ok(out)
    }
}

enum Fragment<'t> {
    Text(&'t [u8]),
    Token(Token),
}

/// The byte a `<0xXX>` token stands for.
fn spm_byte(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One character as llama.cpp's `unicode_cpt_from_utf8` reads it: a lead byte and the right
/// number of continuation bytes, without checking for overlong forms or surrogates. Returns
/// the character to match expressions against (U+FFFD for code points Rust cannot hold) and
/// the bytes used and the code point; `None` for a byte that starts no such sequence.
fn utf8_char(b: &[u8]) -> Option<(char, usize, u32)> {
    let lead = b[0];
    let (len, init) = match lead {
        0x00..=0x7F => return Some((lead as char, 1, lead as u32)),
        0x80..=0xBF => return None,
        0xC0..=0xDF => (2, (lead & 0x1F) as u32),
        0xE0..=0xEF => (3, (lead & 0x0F) as u32),
        0xF0..=0xF7 => (4, (lead & 0x07) as u32),
        _ => return None,
    };
    if b.len() < len || !b[1..len].iter().all(|&c| c & 0xC0 == 0x80) {
        return None;
    }
    let cp = b[1..len]
        .iter()
        .fold(init, |acc, &c| (acc << 6) | (c & 0x3F) as u32);
    Some((char::from_u32(cp).unwrap_or('\u{FFFD}'), len, cp))
}

/// A code point's UTF-8 bytes, surrogates included (as llama.cpp's `unicode_cpt_to_utf8`);
/// `None` past U+10FFFF.
fn encode_cp(cp: u32) -> Option<Vec<u8>> {
    Some(match cp {
        0..=0x7F => vec![cp as u8],
        0x80..=0x7FF => vec![0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8],
        0x800..=0xFFFF => vec![
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ],
        0x1_0000..=0x10_FFFF => vec![
            0xF0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_chars_are_gpt2s() {
        let c = byte_chars();
        assert_eq!(c[b'a' as usize], 'a');
        assert_eq!(c[b' ' as usize], 'Ġ');
        assert_eq!(c[b'\n' as usize], 'Ċ');
        assert_eq!(c[0], 'Ā');
        let distinct: std::collections::HashSet<char> = c.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn gpt2_whitespace_lookahead_is_emulated() {
        let split = Split::with_ws(GPT2, false);
        let pieces = |s: &str| {
            let mut out = Vec::new();
            split.split(s, &mut out, 0);
            out.iter()
                .map(|&(a, b)| s[a..b].to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(pieces("Hello world"), ["Hello", " world"]);
        assert_eq!(pieces("a   b"), ["a", "  ", " b"]);
        assert_eq!(pieces("a\n\nb"), ["a", "\n", "\n", "b"]);
        assert_eq!(pieces("x  "), ["x", "  "]);
        assert_eq!(pieces("it's 42!!"), ["it", "'s", " 42", "!!"]);
        let llama3 = Split::with_ws(LLAMA3, true);
        let mut out = Vec::new();
        llama3.split("a \tb", &mut out, 0);
        assert_eq!(out, [(0, 1), (1, 2), (2, 4)]);
    }

    #[test]
    fn utf8_as_llama_cpp_reads_it() {
        assert_eq!(utf8_char("é".as_bytes()), Some(('é', 2, 0xE9)));
        assert_eq!(utf8_char(&[0x80]), None);
        assert_eq!(utf8_char(&[0xE2, 0x82]), None);
        // A surrogate's encoding is one character (as U+FFFD for matching).
        assert_eq!(
            utf8_char(&[0xED, 0xA0, 0x80]),
            Some(('\u{FFFD}', 3, 0xD800))
        );
        assert_eq!(encode_cp(0xD800), Some(vec![0xED, 0xA0, 0x80]));
        // An overlong '/' reads as '/'.
        assert_eq!(utf8_char(&[0xC0, 0xAF]), Some(('/', 2, 0x2F)));
        assert_eq!(encode_cp(0x2F), Some(vec![b'/']));
        assert_eq!(utf8_char(&[0xFF]), None);
    }

    /// A small Llama-2-style SentencePiece vocabulary: specials, the 256 byte tokens, and a
    /// few pieces with scores.
    fn spm_vocab(add_space_prefix: bool) -> Tokenizer {
        use quant::gguf::{Value, ValueType};
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2i32, 3, 3];
        let mut scores = vec![0f32; 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for (piece, score) in [
            ("\u{2581}", -1.0),
            ("\u{2581}t", -2.0),
            ("he", -3.0),
            ("\u{2581}the", -4.0),
            ("t", -5.0),
            ("h", -5.0),
            ("e", -5.0),
            ("a", -5.0),
            ("ab", -6.0),
            ("bc", -1.5),
            ("b", -5.0),
            ("c", -5.0),
            ("\u{2581}\u{2581}", -7.0),
        ] {
            tokens.push(piece.into());
            types.push(1);
            scores.push(score);
        }
        let mut md = Metadata::new();
        md.insert("tokenizer.ggml.model", Value::String("llama".into()));
        md.insert(
            "tokenizer.ggml.tokens",
            Value::Array(
                ValueType::String,
                tokens.into_iter().map(Value::String).collect(),
            ),
        );
        md.insert(
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        );
        md.insert(
            "tokenizer.ggml.scores",
            Value::Array(ValueType::F32, scores.into_iter().map(Value::F32).collect()),
        );
        md.insert("tokenizer.ggml.bos_token_id", Value::U32(1));
        md.insert("tokenizer.ggml.eos_token_id", Value::U32(2));
        md.insert(
            "tokenizer.ggml.add_space_prefix",
            Value::Bool(add_space_prefix),
        );
        Tokenizer::from_metadata(&md).unwrap()
    }

    #[test]
    fn sentencepiece_merges_by_score_and_falls_back_to_bytes() {
        let t = spm_vocab(true);
        assert!(t.is_sentencepiece());
        // The normal token with this text (byte tokens spell single bytes too).
        let id = |p: &str| {
            (0..t.n_vocab() as Token)
                .find(|&i| {
                    t.types[i as usize] == TokenType::Normal && t.pieces[i as usize] == p.as_bytes()
                })
                .unwrap()
        };
        // BOS, then "▁the": "▁t" (−2) merges before "he" (−3), then "▁t"+"he".
        assert_eq!(t.encode(b"the", true, false), [1, id(" the")]);
        // "abc": "bc" (−1.5) beats "ab" (−6), leaving "a" + "bc".
        assert_eq!(t.encode(b"abc", false, false), [id(" "), id("a"), id("bc")]);
        // Two spaces merge into one "▁▁" token; é has no token: its two bytes.
        assert_eq!(
            t.encode("  é".as_bytes(), false, false),
            [id("  "), id(" "), 3 + 0xC3, 3 + 0xA9]
        );
        // After a special token the text gets its space prefix again.
        assert_eq!(
            t.encode(b"the</s>the", false, true),
            [id(" the"), 2, id(" the")]
        );
        // The unknown token's text is special only with parse_special, as in llama.cpp.
        assert!(!t.encode(b"<unk>x", false, false).contains(&0));
        assert_eq!(t.encode(b"<unk>x", false, true)[0], 0);
        // Decoding drops the prefix space of the first token; any bytes round-trip.
        assert_eq!(
            t.decode(&t.encode(b"the", false, false), true).unwrap(),
            b"the"
        );
        let lossless = |text: &[u8]| t.encode_with(text, false, false, InvalidUtf8::Bytes);
        for text in [
            &b"the cab \xff\x80 \xe2\x82 done"[..],
            "naïve 日本 😀".as_bytes(),
            b"",
            b" ",
        ] {
            assert_eq!(t.decode(&lossless(text), false).unwrap(), text, "{text:?}");
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(t.decode(&lossless(&all), false).unwrap(), all);
        // As llama.cpp reads it (after the prefix "▁"), the lead byte 0xF0 takes the next
        // three bytes, the escaped space's among them, whatever they are.
        let ids = t.encode(b"\xf0 x", false, false);
        assert_eq!(ids[1..5], [3 + 0xF0, 3 + 0xE2, 3 + 0x96, 3 + 0x81]);
        // Without the prefix (Gemma), text starts as it is.
        let g = spm_vocab(false);
        assert_eq!(g.encode(b"the", false, false), [id("t"), id("he")]);
        assert_eq!(g.decode(&[id(" the")], false).unwrap(), b" the");
    }
}
