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

mod bpe;
mod pretok;
mod spm;
mod utf8;
mod vocab;

use quant::gguf::Metadata;

use crate::backend::Token;
use vocab::{meta_err, Vocab};

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

/// A tokenizer read from GGUF metadata: the vocabulary, and the model that splits text into
/// its tokens.
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
}

/// The tokenizer models.
#[derive(Debug)]
enum Model {
    /// Byte-level BPE (`gpt2`).
    Bpe(bpe::Bpe),
    /// SentencePiece (`llama`).
    Spm(spm::Spm),
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file's metadata describes.
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let model = md
            .get_str("tokenizer.ggml.model")
            .map_err(|e| meta_err("tokenizer.ggml.model", e.to_string()))?;
        let (vocab, model) = match model {
            "gpt2" => {
                let (v, m) = bpe::from_metadata(md)?;
                (v, Model::Bpe(m))
            }
            "llama" => {
                let (v, m) = spm::from_metadata(md)?;
                (v, Model::Spm(m))
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        Ok(Tokenizer { vocab, model })
    }

    /// Whether this is a SentencePiece vocabulary.
    pub fn is_sentencepiece(&self) -> bool {
        matches!(self.model, Model::Spm(_))
    }

    /// Number of tokens.
    pub fn n_vocab(&self) -> usize {
        self.vocab.pieces.len()
    }

    /// The token that spells byte `b` alone. Byte-level vocabularies usually have all 256;
    /// some (SmolLM2's) lack bytes that never occur in UTF-8 text and a few control
    /// characters, and such bytes are dropped when encoding, as llama.cpp drops them.
    pub fn byte_token(&self, b: u8) -> Option<Token> {
        self.vocab.byte_token[b as usize]
    }

    /// The BOS token, if the vocabulary names one.
    pub fn bos(&self) -> Option<Token> {
        self.vocab.bos
    }

    /// Whether encoding with `add_special` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos && self.vocab.bos.is_some()
    }

    /// The EOS token, if the vocabulary names one.
    pub fn eos(&self) -> Option<Token> {
        self.vocab.eos
    }

    /// A token's type.
    pub fn token_type(&self, token: Token) -> Result<TokenType, TokenizerError> {
        self.vocab
            .types
            .get(token as usize)
            .copied()
            .ok_or(TokenizerError::InvalidToken {
                token,
                n_vocab: self.vocab.pieces.len(),
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
        if add_special && self.vocab.add_bos {
            out.extend(self.vocab.bos);
        }
        // SentencePiece prefixes a space to text at the start and after special tokens.
        let mut after_special = true;
        for fragment in self.partition(text, parse_special) {
            match (fragment, &self.model) {
                (Fragment::Token(t), _) => {
                    out.push(t);
                    after_special = true;
                }
                (Fragment::Text(s), Model::Spm(spm)) => {
                    let prefix = after_special && spm.add_space_prefix;
                    spm.encode(&self.vocab, s, prefix, invalid, &mut out);
                    after_special = false;
                }
                (Fragment::Text(s), Model::Bpe(bpe)) => {
                    bpe.encode(&self.vocab, s, invalid, &mut out)
                }
            }
        }
        if add_special && self.vocab.add_eos {
            out.extend(self.vocab.eos);
        }
        out
    }

    /// The text split around special tokens, longest tokens first.
    fn partition<'t>(&self, text: &'t [u8], parse_special: bool) -> Vec<Fragment<'t>> {
        let mut frags = vec![Fragment::Text(text)];
        for (bytes, id, ty) in &self.vocab.specials {
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

    /// A token's bytes: its text for normal tokens; for control tokens their text only when
    /// `special` is set (llama.cpp's `token_to_piece`).
    pub fn piece(&self, token: Token, special: bool) -> Result<&[u8], TokenizerError> {
        let ty = self.token_type(token)?;
        Ok(match ty {
            TokenType::Control | TokenType::Unknown | TokenType::Unused if !special => &[],
            _ => &self.vocab.pieces[token as usize],
        })
    }

    /// The bytes of a token sequence (control tokens included as text when `special`).
    /// SentencePiece vocabularies that prefix a space drop one leading space from the first
    /// token, as llama.cpp's detokenizer does, so that decoding an encoding gives the text.
    pub fn decode(&self, tokens: &[Token], special: bool) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::new();
        for (i, &t) in tokens.iter().enumerate() {
            let p = self.piece(t, special)?;
            let strip = i == 0 && matches!(&self.model, Model::Spm(s) if s.add_space_prefix);
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

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::pretok::{byte_chars, Split, GPT2, LLAMA3};
    use super::utf8::{encode_cp, utf8_char};
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
                    t.vocab.types[i as usize] == TokenType::Normal
                        && t.vocab.pieces[i as usize] == p.as_bytes()
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
