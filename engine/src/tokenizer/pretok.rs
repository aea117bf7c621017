//! Pre-tokenization for byte-level BPE: the split expressions `tokenizer.ggml.pre` names
//! (GPT-2's lookahead emulated), and GPT-2's byte-to-character table.

use regex::Regex;

use super::TokenizerError;

/// How one piece of text is split further.
#[derive(Debug)]
pub(super) struct Split {
    /// Anchored at the start (`^(?:...)`).
    re: Regex,
    /// The expression ends in GPT-2's `\s+(?!\S)` (replaced by `\s+` here); with
    /// `then_plain_ws` the original also has a plain `\s+` after it (llama3, qwen2).
    lookahead_ws: bool,
    then_plain_ws: bool,
}

impl Split {
    pub(super) fn plain(re: &str) -> Split {
        Split {
            re: Regex::new(&format!("^(?:{re})")).expect("valid built-in expression"),
            lookahead_ws: false,
            then_plain_ws: false,
        }
    }

    /// `re` ends with `\s+(?!\S)`, given here without it.
    pub(super) fn with_ws(re: &str, then_plain_ws: bool) -> Split {
        Split {
            re: Regex::new(&format!(r"^(?:{re}|\s+)")).expect("valid built-in expression"),
            lookahead_ws: true,
            then_plain_ws,
        }
    }

    /// Splits `s` into the spans of its matches and of the text between them.
    pub(super) fn split(&self, s: &str, out: &mut Vec<(usize, usize)>, base: usize) {
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

pub(super) const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+";
pub(super) const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+";
pub(super) const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+";

/// The split expressions llama.cpp uses for a `tokenizer.ggml.pre` value.
pub(super) fn pre_tokenizer(pre: &str) -> Result<Vec<Split>, TokenizerError> {
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
pub(super) fn byte_chars() -> [char; 256] {
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
