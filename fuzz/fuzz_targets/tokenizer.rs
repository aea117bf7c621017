//! Fuzz the tokenizers. BPE on a small byte-level vocabulary: any bytes encode without panic,
//! keeping invalid UTF-8 as bytes they decode back exactly, and the llama.cpp-compatible mode
//! decodes to the text with each unreadable byte as U+FFFD. SentencePiece on a small
//! Llama-2-style vocabulary (space prefix, byte fallback): any bytes without U+2581 decode
//! back exactly, and special-token parsing never panics.
#![no_main]

use std::sync::OnceLock;

use engine::tokenizer::{InvalidUtf8, Tokenizer};
use libfuzzer_sys::fuzz_target;
use quant::gguf::{Metadata, Value, ValueType};

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        // GPT-2's byte characters: printable bytes stand for themselves, the rest for U+0100...
        let mut n = 0u32;
        let mut tokens: Vec<String> = (0..=255u8)
            .map(|b| {
                if matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF) {
                    char::from(b).to_string()
                } else {
                    n += 1;
                    char::from_u32(255 + n).unwrap().to_string()
                }
            })
            .collect();
        let mut types = vec![1i32; 256];
        let merges = ["Ġ t", "h e", "t h", "th e", "Ġ a", "Ġt he", "i n", "in g", "Ġ 1"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
            types.push(1);
        }
        for (special, ty) in [("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool>", 4)] {
            tokens.push(special.to_string());
            types.push(ty);
        }
        let strings = |v: Vec<String>| {
            Value::Array(ValueType::String, v.into_iter().map(Value::String).collect())
        };
        let mut md = Metadata::new();
        md.insert("tokenizer.ggml.model", Value::String("gpt2".into()));
        md.insert("tokenizer.ggml.pre", Value::String("smollm".into()));
        md.insert("tokenizer.ggml.tokens", strings(tokens));
        md.insert(
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        );
        md.insert(
            "tokenizer.ggml.merges",
            strings(merges.iter().map(|s| s.to_string()).collect()),
        );
        Tokenizer::from_metadata(&md).expect("a valid vocabulary")
    })
}

fn sentencepiece() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2i32, 3, 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        for piece in ["\u{2581}", "\u{2581}t", "he", "\u{2581}the", "t", "h", "e", "in", "\u{2581}\u{2581}", "é"] {
            tokens.push(piece.into());
            types.push(1);
        }
        let scores: Vec<Value> = (0..tokens.len()).map(|i| Value::F32(-(i as f32) / 7.0)).collect();
        let mut md = Metadata::new();
        md.insert("tokenizer.ggml.model", Value::String("llama".into()));
        md.insert(
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::String, tokens.into_iter().map(Value::String).collect()),
        );
        md.insert(
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        );
        md.insert("tokenizer.ggml.scores", Value::Array(ValueType::F32, scores));
        md.insert("tokenizer.ggml.bos_token_id", Value::U32(1));
        Tokenizer::from_metadata(&md).expect("a valid vocabulary")
    })
}

fuzz_target!(|data: &[u8]| {
    let spm = sentencepiece();
    // Special-token text is left as text here: after a special token SentencePiece adds a
    // space prefix, which decoding keeps.
    let ids = spm.encode_with(data, false, false, InvalidUtf8::Bytes);
    if !data.windows(3).any(|w| w == "\u{2581}".as_bytes()) {
        assert_eq!(spm.decode(&ids, true).unwrap(), data);
    }
    let _ = spm.encode(data, true, true);

    let t = tokenizer();
    let ids = t.encode_with(data, true, false, InvalidUtf8::Bytes);
    assert_eq!(t.decode(&ids, true).unwrap(), data);
    let special = t.encode_with(data, true, true, InvalidUtf8::Bytes);
    assert_eq!(t.decode(&special, true).unwrap(), data);
    let _ = t.encode(data, true, true);
    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(t.encode(data, false, false), ids, "{s:?}");
    }
});
