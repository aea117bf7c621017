//! Byte-level BPE (`tokenizer.ggml.model = gpt2`): the vocabulary read through GPT-2's
//! byte-to-character table, merges by rank, pre-tokenization, and the merge loop.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use quant::gguf::Metadata;

use super::pretok::{byte_chars, pre_tokenizer, Split};
use super::utf8::{encode_cp, utf8_char};
use super::vocab::{meta_err, token_types, Vocab};
use super::{InvalidUtf8, TokenType, TokenizerError};
use crate::backend::Token;

/// What byte-level BPE needs beyond the vocabulary.
#[derive(Debug)]
pub(super) struct Bpe {
    /// Bytes → token, for normal and user-defined tokens.
    by_bytes: HashMap<Vec<u8>, Token>,
    /// (left, right) → (rank, merged token).
    merges: HashMap<(Token, Token), (u32, Token)>,
    splits: Vec<Split>,
    /// Emit a whole piece as one token when it is one (llama.cpp's `ignore_merges`).
    ignore_merges: bool,
}

/// A byte-level BPE vocabulary and its merges from GGUF metadata.
pub(super) fn from_metadata(md: &Metadata) -> Result<(Vocab, Bpe), TokenizerError> {
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
    let decode =
        |s: &str| -> Option<Vec<u8>> { s.chars().map(|c| char_byte.get(&c).copied()).collect() };

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

    let llama3 = matches!(pre, "llama3" | "llama-v3" | "llama-bpe");
    let vocab = Vocab::new(md, pieces, types, byte_token, specials, llama3)?;
    Ok((
        vocab,
        Bpe {
            by_bytes,
            merges,
            splits,
            ignore_merges,
        },
    ))
}

impl Bpe {
    /// Pre-tokenizes `text` and merges each piece.
    pub(super) fn encode(
        &self,
        vocab: &Vocab,
        text: &[u8],
        invalid: InvalidUtf8,
        out: &mut Vec<Token>,
    ) {
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
            self.merge_word(vocab, &word, out);
        }
    }

    /// Byte-pair encoding of one piece.
    fn merge_word(&self, vocab: &Vocab, word: &[u8], out: &mut Vec<Token>) {
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
                token: vocab.byte_token[word[i] as usize],
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
                            .filter_map(|&b| vocab.byte_token[b as usize]),
                    );
                }
            }
            i = s.next;
        }
    }
}
