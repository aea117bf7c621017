//! The native tokenizer on the default model (byte-level BPE) and on Gemma 3 (SentencePiece):
//! ids identical to llama.cpp's on a broad corpus (with the `llama-cpp` feature), and exact
//! round trips of any bytes.

use engine::tokenizer::{InvalidUtf8, Tokenizer};
use quant::gguf::GgufFile;

fn tokenizer() -> Tokenizer {
    let file = GgufFile::open(passuntil_tests::default_model()).unwrap();
    Tokenizer::from_metadata(file.metadata()).expect("the default model's tokenizer")
}

fn gemma_path() -> std::path::PathBuf {
    engine::models::resolve("gemma3-270m", &mut |m| eprintln!("{m}"))
        .unwrap_or_else(|e| panic!("cannot fetch gemma3-270m: {e}"))
}

fn gemma() -> Tokenizer {
    let file = GgufFile::open(gemma_path()).unwrap();
    Tokenizer::from_metadata(file.metadata()).expect("Gemma 3's SentencePiece tokenizer")
}

/// Texts that exercise the pre-tokenizer and the merges: ASCII prose, contractions, numbers
/// and digit runs, whitespace runs of every kind, code, Unicode scripts, emoji with joiners,
/// control-token text, and bytes that are not UTF-8.
fn corpus() -> Vec<Vec<u8>> {
    let texts: &[&str] = &[
        "",
        " ",
        "The capital of France is",
        "Hello world! How's it going? I'm fine, you'll see; we'd've known.",
        "HELLO World's CAN'T DON'T",
        "12345 + 678 = 13023; 3.14159, 1e-9, 0x1F, 1,000,000",
        "  leading spaces\tand\ttabs\n\nnew lines\r\n\r\nwindows   \n  \n trailing   ",
        "\n\n\n",
        "a  b   c    d     e",
        "fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{:?}\", x);\n}\n",
        "def f(x):\n\treturn x ** 2  # square\n",
        "<html><body class=\"x\">&amp; &lt;</body></html>",
        "Ünïcödé façade naïve coöperate résumé",
        "Привет, мир! Съешь же ещё этих мягких французских булок.",
        "日本語のテキストと漢字、そして中文。",
        "العربية עברית हिन्दी ไทย 한국어",
        "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
        "math: ∑ ∫ √ ∞ ≈ ≠ ² ³ ½ Ⅻ",
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
        "<bos><unk> [multimodal] <mask>",
        "ends with special<|endoftext|>",
        "mixed123abc456 d7e8f9",
        "''' \"\"\" ``` --- *** ___ ...",
        "   ",
        "x\u{00a0}y\u{2003}z\u{3000}w",
    ];
    let mut out: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
    // Not UTF-8: stray continuation bytes, truncated sequences, invalid lead bytes, a
    // surrogate's encoding, and an overlong form.
    out.push(b"abc\x80def".to_vec());
    out.push(b"trunc \xe2\x82".to_vec());
    out.push(b"\xff\xfe bytes \xc3".to_vec());
    out.push(b"sur\xed\xa0\x80rogate".to_vec());
    out.push(b"over\xc0\xafflow".to_vec());
    // Every byte value.
    out.push((0u8..=255).collect());
    out
}

#[test]
fn any_bytes_round_trip() {
    let t = tokenizer();
    // SmolLM2's vocabulary has no token for 21 byte values (bytes UTF-8 never uses, and a few
    // control characters); those are dropped, as llama.cpp drops them.
    let missing: Vec<u8> = (0..=255u8).filter(|&b| t.byte_token(b).is_none()).collect();
    assert_eq!(missing.len(), 21, "{missing:x?}");
    for text in corpus() {
        let ids = t.encode_with(&text, false, false, InvalidUtf8::Bytes);
        let kept: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !missing.contains(b))
            .collect();
        assert_eq!(
            t.decode(&ids, true).unwrap(),
            kept,
            "{:?}",
            String::from_utf8_lossy(&text)
        );
        if let Ok(s) = std::str::from_utf8(&text) {
            // Valid UTF-8 (without control tokens) gives the same ids either way, and
            // special-token text comes back through its control tokens.
            assert_eq!(t.encode(&text, false, false), ids, "{s:?}");
            let special = t.encode(&text, false, true);
            assert_eq!(t.decode(&special, true).unwrap(), text, "{s:?}");
        }
    }
}

/// Our ids against llama.cpp's for every corpus text under three option sets, and the pieces.
#[cfg(feature = "llama-cpp")]
fn check_against_llama_cpp(path: &std::path::Path, t: &Tokenizer) {
    use engine::backend::{Context, TokenizeOptions};
    use engine::llama_cpp::{ContextOptions, LlamaCppModel};

    let model = LlamaCppModel::open(path, 0).unwrap();
    let b = model
        .new_context(&ContextOptions {
            n_ctx: 256,
            n_seq_max: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(t.n_vocab(), b.info().n_vocab);
    let mut checked = 0;
    for text in corpus() {
        for (add_special, parse_special) in [(false, false), (true, true), (false, true)] {
            let opts = TokenizeOptions {
                add_special,
                parse_special,
            };
            let theirs = b.tokenize(&text, opts).unwrap();
            let ours = t.encode(&text, add_special, parse_special);
            assert_eq!(
                ours,
                theirs,
                "{:?} (add_special {add_special}, parse_special {parse_special})",
                String::from_utf8_lossy(&text)
            );
            checked += 1;
        }
        // Pieces agree too.
        for &id in &t.encode(&text, false, true) {
            assert_eq!(
                t.piece(id, true).unwrap(),
                b.token_piece(id).unwrap(),
                "token {id}"
            );
        }
    }
    assert!(checked >= 90);
}

#[cfg(feature = "llama-cpp")]
#[test]
fn ids_match_llama_cpp() {
    check_against_llama_cpp(passuntil_tests::default_model(), &tokenizer());
}

#[cfg(feature = "llama-cpp")]
#[test]
fn sentencepiece_ids_match_llama_cpp() {
    let t = gemma();
    assert!(t.is_sentencepiece());
    check_against_llama_cpp(&gemma_path(), &t);
}

#[test]
fn sentencepiece_round_trips_any_bytes() {
    // Gemma adds no space prefix and has all 256 byte tokens: in the lossless mode every byte
    // string comes back exactly, invalid UTF-8 included (SentencePiece spells unknown
    // characters in bytes), as long as it holds no U+2581 (which decodes to a space).
    let t = gemma();
    assert!((0..=255u8).all(|b| t.byte_token(b).is_some()));
    for text in corpus() {
        if text.windows(3).any(|w| w == "\u{2581}".as_bytes()) {
            continue;
        }
        let ids = t.encode_with(&text, false, false, InvalidUtf8::Bytes);
        assert_eq!(
            t.decode(&ids, true).unwrap(),
            text,
            "{:?}",
            String::from_utf8_lossy(&text)
        );
        // Valid UTF-8 gives llama.cpp's ids either way.
        if std::str::from_utf8(&text).is_ok() {
            assert_eq!(ids, t.encode(&text, false, false));
        }
    }
}
