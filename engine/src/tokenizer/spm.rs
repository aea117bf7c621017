//! SentencePiece (`tokenizer.ggml.model = llama`: Gemma, Llama 2, Mistral): tokens with
//! scores, spaces written `▁`, merges by score, and `<0xXX>` byte fallback.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use quant::gguf::Metadata;

use super::utf8::utf8_char;
use super::vocab::{meta_err, token_types, Vocab};
use super::{InvalidUtf8, TokenType, TokenizerError};
use crate::backend::Token;

/// What SentencePiece tokenization needs beyond the shared tables.
#[derive(Debug)]
pub(super) struct Spm {
    /// Each token's score: the higher, the earlier a pair merges into it.
    scores: Vec<f32>,
    /// Token text (spaces written `▁`) → id, every token as llama.cpp's `text_to_token`.
    by_text: HashMap<Vec<u8>, Token>,
    /// Prepend a space to text at the start and after a special token.
    pub(super) add_space_prefix: bool,
}

/// SentencePiece's visible space, U+2581.
const SPM_SPACE: &[u8] = "\u{2581}".as_bytes();

/// A SentencePiece vocabulary: tokens, scores and types; spaces are `▁` in token text,
/// byte-fallback tokens are spelled `<0xXX>`.
pub(super) fn from_metadata(md: &Metadata) -> Result<(Vocab, Spm), TokenizerError> {
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
    let flag = |key: &str| md.get(key).and_then(|v| v.as_bool());
    let vocab = Vocab::new(md, pieces, types, byte_token, specials, true)?;
    Ok((
        vocab,
        Spm {
            scores,
            by_text,
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix").unwrap_or(true),
        },
    ))
}

impl Spm {
    /// SentencePiece encoding of one piece of text, as llama.cpp's SPM tokenizer does it:
    /// spaces become `▁`, the text splits into UTF-8 characters (by lead byte, unchecked),
    /// and adjacent symbols merge while their concatenation is a token, the pair whose
    /// token scores highest first (the leftmost among equals). A final symbol that is no
    /// token is spelled with `<0xXX>` byte tokens, so every byte string is encoded without
    /// loss.
    pub(super) fn encode(
        &self,
        vocab: &Vocab,
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
            if let Some(&tok) = self.by_text.get(&t[a..a + n]) {
                heap.push(Pair(self.scores[tok as usize], Reverse(l), l, r, n));
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
            match self.by_text.get(piece) {
                Some(&tok) => out.push(tok),
                // A character the vocabulary lacks: its bytes (a byte without a token is
                // dropped; llama.cpp would fail).
                None => out.extend(piece.iter().filter_map(|&b| vocab.byte_token[b as usize])),
            }
            i = s.next;
        }
    }
}

/// The byte a `<0xXX>` token stands for.
fn spm_byte(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
