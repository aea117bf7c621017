//! Loglikelihood scoring on the native engine: which answer does the model find likeliest?
//! (The way multiple-choice benchmarks are scored: the sum of the answer's teacher-forced
//! token log-probabilities after the question.)
//!
//! ```sh
//! cargo run --release -p passuntil-engine --example score
//! ```

use engine::backend::{Context, TokenizeOptions};
use engine::generate::score_continuation;
use engine::native::NativeModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = engine::models::resolve("smollm2-135m", &mut |msg| eprintln!("{msg}"))?;
    let model = NativeModel::open(&path)?;
    let mut backend = model.new_context(512, 1)?;
    let question = "Question: Which city is the capital of France?\nAnswer:";
    let context = backend.tokenize(question.as_bytes(), TokenizeOptions::default())?;
    let plain = TokenizeOptions {
        add_special: false,
        parse_special: false,
    };
    let mut best = None::<(f64, &str)>;
    for answer in [" Paris", " London", " Berlin", " Lyon"] {
        let cont = backend.tokenize(answer.as_bytes(), plain)?;
        let s = score_continuation(&mut backend, &context, &cont, 0, 512)?;
        println!(
            "{answer:>10}: logprob {:8.3} over {} tokens{}",
            s.logprob,
            cont.len(),
            if s.is_greedy { " (greedy)" } else { "" }
        );
        if best.is_none_or(|(b, _)| s.logprob > b) {
            best = Some((s.logprob, answer));
        }
    }
    if let Some((_, answer)) = best {
        println!("most likely:{answer}");
    }
    Ok(())
}
