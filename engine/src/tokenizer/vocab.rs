//! The vocabulary every tokenizer model shares: each token's bytes and type, the byte
//! tokens, the special tokens matched in text, and the BOS/EOS settings; and the metadata
//! readers both models use.

use quant::gguf::Metadata;

use super::{TokenType, TokenizerError};
use crate::backend::Token;

/// Tokens' bytes and types, and what encoding adds around the text.
#[derive(Debug)]
pub(super) struct Vocab {
    /// Each token's bytes (control tokens: their text).
    pub(super) pieces: Vec<Vec<u8>>,
    pub(super) types: Vec<TokenType>,
    /// The token of each single byte, where the vocabulary has one.
    pub(super) byte_token: [Option<Token>; 256],
    /// Special tokens recognised in text, longest first.
    pub(super) specials: Vec<(Vec<u8>, Token, TokenType)>,
    pub(super) bos: Option<Token>,
    pub(super) eos: Option<Token>,
    pub(super) add_bos: bool,
    pub(super) add_eos: bool,
}

impl Vocab {
    /// A vocabulary of `pieces` and `types` with its byte and special tokens; BOS/EOS ids and
    /// flags from the metadata (`add_bos_token` defaulting to `default_add_bos`).
    pub(super) fn new(
        md: &Metadata,
        pieces: Vec<Vec<u8>>,
        types: Vec<TokenType>,
        byte_token: [Option<Token>; 256],
        mut specials: Vec<(Vec<u8>, Token, TokenType)>,
        default_add_bos: bool,
    ) -> Result<Vocab, TokenizerError> {
        sort_specials(&mut specials);
        let n = pieces.len();
        let id = |key: &str| token_id(md, key, n);
        let flag = |key: &str| md.get(key).and_then(|v| v.as_bool());
        Ok(Vocab {
            pieces,
            types,
            byte_token,
            specials,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            add_bos: flag("tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos),
            add_eos: flag("tokenizer.ggml.add_eos_token").unwrap_or(false),
        })
    }
}

/// Each token's type (`tokenizer.ggml.token_type`; all normal when absent).
pub(super) fn token_types(md: &Metadata, n: usize) -> Result<Vec<TokenType>, TokenizerError> {
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

pub(super) fn meta_err(key: &str, problem: impl Into<String>) -> TokenizerError {
    TokenizerError::Metadata {
        key: key.to_string(),
        problem: problem.into(),
    }
}
