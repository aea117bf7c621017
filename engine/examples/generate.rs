//! Sample a prompt several times on the native engine, with per-token log-probabilities.
//!
//! ```sh
//! cargo run --release -p passuntil-engine --example generate -- "Once upon a time" 4
//! ```
//! The default model is fetched into the cache on first use.

use engine::backend::{Context, TokenizeOptions};
use engine::generate::{generate, GenerateOptions};
use engine::native::NativeModel;
use engine::sampling::SamplingParams;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let prompt = args.next().unwrap_or_else(|| "Once upon a time".into());
    let n: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);

    let path = engine::models::resolve("smollm2-135m", &mut |msg| eprintln!("{msg}"))?;
    let model = NativeModel::open(&path)?;
    // 64 new tokens per sample; the prompt's cells are shared by all samples.
    let mut backend = model.new_context(64 * n as u32 + 256, n as u32)?;
    let tokens = backend.tokenize(prompt.as_bytes(), TokenizeOptions::default())?;
    let opts = GenerateOptions {
        max_tokens: 64,
        sampling: SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            repeat_penalty: 1.1,
            ..SamplingParams::default()
        },
        seed: 42,
        top_logprobs: 2,
        ..GenerateOptions::default()
    };
    for s in generate(&mut backend, &tokens, 0, n, &opts)? {
        let text = String::from_utf8_lossy(&backend.detokenize(&s.tokens)?).into_owned();
        println!(
            "--- sample {} (logprob {:.2}, {:?})",
            s.index, s.logprob, s.stop
        );
        println!("{prompt}{text}");
        // The first few tokens with the alternatives the model weighed.
        for (&t, lp) in s.tokens.iter().zip(&s.per_token).take(3) {
            let piece = String::from_utf8_lossy(&backend.token_piece(t)?).into_owned();
            let alts: Vec<String> = lp
                .top
                .iter()
                .map(|&(a, l)| {
                    let p = backend.token_piece(a).unwrap_or_default();
                    format!("{:?} {:.2}", String::from_utf8_lossy(&p), l)
                })
                .collect();
            println!("    {piece:?} {:.2}  [{}]", lp.logprob, alts.join(", "));
        }
    }
    Ok(())
}
